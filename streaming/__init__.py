"""Jobstream's streaming core: events in, Server-Sent Events out.

Sub-packages, each importing only those listed before it:

* ``streaming.core`` - the wire format and the model: events, ids, topics,
  history, the broker interface, the client registry and each stream's
  writer. No Flask; sockets only through ``core.writer``.
* ``streaming.scaleout`` - the Redis Stream broker and the table that the
  workers of one gunicorn master share.
* ``streaming.ops`` - one worker's service (registry + broker + cleanup +
  shutdown), its observers, metrics and gunicorn hooks.
* ``streaming.transport`` - HTTP: the stream generator, the routes, the fast
  path in front of Flask and the hang-up watch.

Everything may import ``server`` (app-wide settings, errors, logs); nothing
here imports ``jobs`` or ``board``. Other packages use only the names below.
Importing this package imports nothing else (``gunicorn.conf.py`` imports
``streaming.scaleout.instance`` in the unpatched master), and nothing starts
until an app is created.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from streaming.core.broker import BrokerUnavailable
    from streaming.core.events import Delivery, Event, check_text, data_text
    from streaming.core.reasons import CloseReason, RefusalReason
    from streaming.core.topics import TopicFilter
    from streaming.ops.metrics import Metrics, metrics_of
    from streaming.ops.observers import Observer
    from streaming.ops.service import JobView, StreamingService
    from streaming.scaleout.redis_broker import RedisPublisher
    from streaming.scaleout.redis_client import Durable as RedisDurable
    from streaming.scaleout.redis_client import connect as redis_connect
    from streaming.scaleout.redis_client import is_outage as redis_outage
    from streaming.scaleout.redis_keys import PREFIX as REDIS_PREFIX
    from streaming.scaleout.redis_keys import rename_legacy_keys as redis_rename_legacy_keys
    from streaming.transport.views import init_app

__all__ = [
    "REDIS_PREFIX",
    "BrokerUnavailable",
    "CloseReason",
    "Delivery",
    "Event",
    "JobView",
    "Metrics",
    "Observer",
    "RedisDurable",
    "RedisPublisher",
    "RefusalReason",
    "StreamingService",
    "TopicFilter",
    "broadcast",
    "check_text",
    "data_text",
    "get_connection_stats",
    "init_app",
    "metrics_of",
    "redis_connect",
    "redis_outage",
    "redis_rename_legacy_keys",
    "service_of",
]

_LAZY = {
    "BrokerUnavailable": ("streaming.core.broker", "BrokerUnavailable"),
    "CloseReason": ("streaming.core.reasons", "CloseReason"),
    "Delivery": ("streaming.core.events", "Delivery"),
    "Event": ("streaming.core.events", "Event"),
    "Observer": ("streaming.ops.observers", "Observer"),
    "RedisPublisher": ("streaming.scaleout.redis_broker", "RedisPublisher"),
    "RefusalReason": ("streaming.core.reasons", "RefusalReason"),
    "StreamingService": ("streaming.ops.service", "StreamingService"),
    "TopicFilter": ("streaming.core.topics", "TopicFilter"),
    "check_text": ("streaming.core.events", "check_text"),
    "data_text": ("streaming.core.events", "data_text"),
    "init_app": ("streaming.transport.views", "init_app"),
    "metrics_of": ("streaming.ops.metrics", "metrics_of"),
    "Metrics": ("streaming.ops.metrics", "Metrics"),
    "JobView": ("streaming.ops.service", "JobView"),
    "redis_connect": ("streaming.scaleout.redis_client", "connect"),
    "RedisDurable": ("streaming.scaleout.redis_client", "Durable"),
    "redis_outage": ("streaming.scaleout.redis_client", "is_outage"),
    "REDIS_PREFIX": ("streaming.scaleout.redis_keys", "PREFIX"),
    "redis_rename_legacy_keys": ("streaming.scaleout.redis_keys", "rename_legacy_keys"),
}

EXTENSION = "jobstream"


def __getattr__(name: str) -> Any:
    # PEP 562: the public names load their module on first use, so importing
    # ``streaming`` (or one of its sub-modules) drags nothing else in.
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'streaming' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def service_of(app: Flask | None = None) -> StreamingService:
    """The streaming service of ``app`` (default: the current Flask app)."""
    if app is None:
        from flask import current_app

        app = current_app
    svc: StreamingService = app.extensions[EXTENSION]
    return svc


def broadcast(
    topic: str,
    data: Any,
    event: str = "message",
    app: Flask | None = None,
    private: bool = False,
    priority: str | None = None,
    key: str | None = None,
) -> str:
    """Publish one event from Python code inside a worker; returns its id.

    The same path as ``POST /events`` (history, fan-out, Redis when set), so
    ``topic`` and ``event`` must pass the same checks (the server's own event
    names and the ``jobs/`` topics are reserved); raises ``ValueError`` naming
    the field otherwise, and ``BrokerUnavailable`` when Redis is down.
    ``private``: only streams whose token may subscribe to ``topic``, admin
    tokens and the operator get it; a ``ValueError`` with ``STREAM_AUTH=off``.
    ``priority="low"`` with a ``key``: a full client buffer keeps only the
    newest low event of that key (docs/delivery.md, priorities).
    """
    from streaming.core.events import check_delivery, check_event_name
    from streaming.core.topics import check_topic

    check_topic(topic)
    check_event_name(event)
    given = {"priority": priority} if priority is not None else {}
    if key is not None:
        given["key"] = key
    return service_of(app).publish(topic, event, data, check_delivery(private, **given)).id


def get_connection_stats(app: Flask | None = None) -> dict[str, Any]:
    """This worker's (or, with several workers, the instance's) stream counters."""
    return service_of(app).stats()
