"""Jobs: a durable store, a runner, a JSON API, and every job change on the stream.

``init_app(app, service)`` wires the subsystem into an app: it builds the
store and the runner, registers the blueprint and fills the service's hooks.
Nothing starts there: the runner and the change feed start from
``service.on_start`` (inside the gunicorn worker, after gevent patched).

Handler modules only need the decorator::

    from jobs import JobContext, handler
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from jobs.handlers import JobCancelled, JobContext, ParamsError, handler, registry

if TYPE_CHECKING:
    from flask import Flask

    from jobs.store import JobStore
    from streaming.service import StreamingService

__all__ = ["JobCancelled", "JobContext", "ParamsError", "handler", "init_app", "load_handlers"]


def load_handlers(modules: tuple[str, ...]) -> None:
    """Import the built-in types and every module named in ``JOBS_HANDLERS``.

    A module that cannot be imported stops start-up with a ``ConfigError``
    naming the variable, like any other bad setting.
    """
    from streaming.settings import ConfigError

    importlib.import_module("jobs.builtin")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError("JOBS_HANDLERS", name, f"cannot import handler module: {exc}") from exc


def init_app(app: Flask, service: StreamingService, store: JobStore | None = None) -> None:
    from jobs.feed import ChangeFeed, publisher, snapshot
    from jobs.runner import Runner
    from jobs.store import make_store
    from jobs.views import JobsExtension, bp

    settings = service.settings
    load_handlers(settings.jobs_handlers)
    store = store or make_store(settings)
    announce = publisher(service)
    runner = Runner(store, registry, announce, concurrency=settings.jobs_concurrency, in_server=True)
    feed = ChangeFeed(store, announce)
    app.extensions["jobs"] = JobsExtension(store=store, runner=runner, handlers=registry, service=service)
    app.register_blueprint(bp)

    service.snapshot = lambda client: snapshot(store, client.topics)
    service.job_counts = store.counts
    service.on_start.extend([feed.start, runner.start])
    # Stop the runner first, so the jobs it marks interrupted are published
    # by this process while the streams are still open.
    service.on_shutdown.extend([runner.stop, feed.stop])
