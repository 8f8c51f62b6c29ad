"""Jobstream's streaming core, and the original design's Python API.

The functions below act on the service that ``create_app`` installed with
``use``. Importing this package has no side effects: no thread, lock, queue
or socket exists until an app is created.
"""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streaming.service import StreamingService

__all__ = ["add_client", "broadcast", "current", "get_connection_stats", "remove_client", "shutdown", "use"]

_service: StreamingService | None = None


def use(service: StreamingService | None) -> None:
    """Make ``service`` the target of the module-level API."""
    global _service
    _service = service


def current() -> StreamingService:
    if _service is None:
        raise RuntimeError("no Jobstream app: call app.create_app() first")
    return _service


def add_client(client_queue: queue.Queue[Any], remote_addr: str, user_agent: str) -> bool:
    """Register a client queue; ``False`` when at capacity (or draining)."""
    from streaming.registry import Client

    return current().registry.admit(Client(queue=client_queue, remote_addr=remote_addr, user_agent=user_agent)) is None


def remove_client(client_queue: queue.Queue[Any]) -> None:
    current().registry.remove(client_queue)


def broadcast(message: Any) -> str:
    """Publish ``{"topic", "event"?, "data"}`` (or an ``Event``-like object); returns its id."""
    if isinstance(message, dict):
        topic, event, data = message["topic"], message.get("event", "message"), message.get("data")
    else:
        topic, event, data = message.topic, message.event, message.data
    return current().publish(topic, event, data).id


def get_connection_stats() -> dict[str, Any]:
    return current().stats()


def shutdown() -> None:
    current().shutdown(drain_seconds=0)
