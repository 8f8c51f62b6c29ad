"""``python -m jobs.worker``: a runner without HTTP, against the same store.

Use it to run jobs outside the web server (more CPU, other hosts with Redis,
handlers that must not share a process with the streams). It claims from the
same store as the server, so a job runs once whichever process takes it. Its
changes reach the streams through the SQLite store's change feed
(``jobs.feed.ChangeFeed``, polled by the server) or, with ``REDIS_URL``, by
publishing them to the shared event stream itself. It reads the same
settings (``JOBS_DB`` or ``REDIS_URL``, ``JOBS_CONCURRENCY``, ``JOBS_HANDLERS``).

SIGTERM or SIGINT: stop claiming, give running handlers ``--grace`` seconds
to notice ``ctx.cancelled``, mark what still runs ``error``/``interrupted``,
exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from jobs import load_handlers
from jobs.handlers import registry
from jobs.runner import Runner
from jobs.wiring import make_store
from server import logs
from server.settings import ConfigError, Settings

log = logging.getLogger("jobstream.jobs")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--grace", type=float, default=5.0, help="seconds running handlers get on shutdown")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        parser.exit(2, f"{exc}\n")
    logs.configure(settings.log_level)
    load_handlers(settings.jobs_handlers)
    store = make_store(settings)
    runner = Runner(store, registry, announce=_announcer(settings), concurrency=settings.jobs_concurrency)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.start()
    log.info(
        "job worker started",
        extra={"event": "worker_started", "owner": store.instance, "types": registry.names(), "db": settings.jobs_db},
    )
    while not stop.wait(1.0):
        pass
    runner.stop(grace_seconds=args.grace)
    store.close()
    log.info("job worker stopped", extra={"event": "worker_stopped"})
    return 0


def _announcer(settings: Settings) -> Callable[[dict[str, Any]], None]:
    """With SQLite the server's change feed publishes our writes; with Redis
    we publish them to the shared event stream ourselves (there is no feed)."""
    if not settings.redis_url:
        return lambda job: None
    from jobs.feed import EVENT, delivery_of, topic_of
    from streaming import RedisPublisher, data_text

    stream = RedisPublisher(settings.redis, settings.history_size)

    # An owned job's events are private to its owner, as StreamingService.publish
    # makes them; with STREAM_AUTH=off readers are not identified: public.
    owners = settings.stream_auth != "off"

    def announce(job: dict[str, Any]) -> None:
        stream.publish(topic_of(job["id"]), EVENT, data_text(job), delivery_of(job, owners))

    return announce


if __name__ == "__main__":
    raise SystemExit(main())
