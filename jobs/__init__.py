"""Jobs: a durable store, a runner, a JSON API, and every job change on the stream.

``init_app(app, service)`` wires the subsystem into an app: it builds the
store and the runner, registers the blueprint, and registers with the
streaming service (the snapshot and counts it shows, an observer that starts
and stops the runner and the change feed, the job metrics). Nothing starts
there: the runner and the feed start from the service's ``started`` hook
(inside the gunicorn worker, after gevent patched).

May import: ``server``, ``streaming``'s public surface (``from streaming import
...``, never its sub-packages), the standard library, Flask, redis and
prometheus_client.

Handler modules only need the decorator::

    from jobs import JobContext, handler
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from jobs.handlers import JobCancelled, JobContext, ParamsError, handler, registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask

    from jobs.model import Job
    from jobs.store import JobStore
    from streaming import StreamingService

__all__ = ["JobCancelled", "JobContext", "ParamsError", "handler", "init_app", "load_handlers"]


def load_handlers(modules: tuple[str, ...]) -> None:
    """Import the built-in types and every module named in ``JOBS_HANDLERS``.

    A module that cannot be imported stops start-up with a ``ConfigError``
    naming the variable, like any other bad setting.
    """
    from server.settings import ConfigError

    importlib.import_module("jobs.builtin")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError("JOBS_HANDLERS", name, f"cannot import handler module: {exc}") from exc


def init_app(app: Flask, service: StreamingService, store: JobStore | None = None) -> None:
    from jobs.feed import ChangeFeed, publisher
    from jobs.metrics import JobMetrics
    from jobs.runner import Runner
    from jobs.views import JobsExtension, bp
    from jobs.wiring import JobsObserver, JobsView, make_store
    from streaming import metrics_of

    settings = service.settings
    load_handlers(settings.jobs_handlers)
    store = store or make_store(settings)
    announce = publisher(service)
    runner = Runner(
        store, registry, announce, concurrency=settings.jobs_concurrency, in_server=True, on_finished=_timer(service)
    )
    feed = ChangeFeed(store, announce)
    app.extensions["jobs"] = JobsExtension(store=store, runner=runner, handlers=registry, service=service)
    app.register_blueprint(bp)

    service.provide_jobs(JobsView(store, readers_checked=settings.stream_auth != "off"))
    service.observe(JobsObserver(runner, feed))
    service.observe(JobMetrics(metrics_of(app), store.counts))


def _timer(service: StreamingService) -> Callable[[Job], None]:
    """Report each finished job's run time to the service (the duration metric)."""

    def finished(job: Job) -> None:
        if job.started_at is not None and job.finished_at is not None:
            service.job_finished(job.status.value, (job.finished_at - job.started_at) / 1000)

    return finished
