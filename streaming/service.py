"""One worker's streaming machinery: registry, broker, cleanup, shutdown.

``create_app`` builds a ``StreamingService`` (no threads yet); ``start`` runs
inside the worker after gevent has patched (gunicorn's ``post_worker_init``,
or lazily on the first request outside gunicorn).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from streaming.background import Background
from streaming.broker import Broker, MemoryBroker
from streaming.cleanup import Cleaner
from streaming.events import Event, data_text
from streaming.history import SqliteHistory
from streaming.registry import SHUTDOWN, Admission, Client, Registry
from streaming.settings import Settings

log = logging.getLogger("jobstream.streaming")

# How often a worker copies its counters to the instance table.
STATS_COPY_SECONDS = 1.0


class StreamingService:
    def __init__(
        self, settings: Settings, broker: Broker | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.started_at = time.time()
        self.registry = Registry(
            max_connections=settings.max_connections,
            send_timeout_seconds=settings.send_timeout_seconds,
            keepalive_seconds=settings.keepalive_seconds,
            max_connections_per_ip=settings.max_connections_per_ip,
            clock=clock,
            on_close=self._closed,
        )
        self.broker: Broker = broker or _make_broker(settings, self.registry)
        self.cleaner = Cleaner(
            self.registry, settings.cleanup_seconds, clock, keepalive_seconds=settings.keepalive_seconds
        )
        # Filled in by the jobs package: the snapshot a stream starts with and
        # the job counts in /health.
        self.snapshot: Callable[[Client], Any] | None = None
        self.job_counts: Callable[[], dict[str, int]] | None = None
        self.on_start: list[Callable[[], None]] = []
        self.on_shutdown: list[Callable[[], None]] = []
        # Observers (metrics): called once per stream closed, per publish
        # (with its duration in seconds), per replay and per reset; never per
        # event per client.
        self.close_hooks: list[Callable[[Client, str], None]] = [_log_closed]
        self.publish_hooks: list[Callable[[Event, float], None]] = []
        self.on_replay: Callable[[str], None] | None = None
        self.on_reset: Callable[[str], None] | None = None
        # Called by the jobs package once per job reaching a final status.
        self.job_finished_hooks: list[Callable[[str, float], None]] = []
        self._lock = threading.Lock()
        self._started = False
        self.shutting_down = False
        self._stats_copier = Background("jobstream-instance-stats", self._copy_stats)

    def share_limits(self, admission: Admission) -> None:
        """Let ``admission`` decide capacity for the whole instance (before ``start``)."""
        self.registry.admission = admission
        self.on_start.append(self._stats_copier.start)

    def _copy_stats(self, stop: threading.Event) -> None:
        # Other workers read this worker's message counts from the shared
        # table; admit and remove update the rest as they happen.
        while not stop.wait(STATS_COPY_SECONDS):
            self.registry.stats()

    # -- the spec's API ------------------------------------------------------

    def publish(self, topic: str, event: str, data: Any) -> Event:
        text = data_text(data)
        started = time.perf_counter()
        published = self.broker.publish(topic, event, text)
        if self.publish_hooks:
            elapsed = time.perf_counter() - started
            for hook in self.publish_hooks:
                hook(published, elapsed)
        return published

    def job_finished(self, status: str, seconds: float) -> None:
        """A job reached ``status`` (completed, cancelled, error) after running ``seconds``."""
        for hook in self.job_finished_hooks:
            hook(status, seconds)

    def _closed(self, client: Client, reason: str) -> None:
        for hook in self.close_hooks:
            hook(client, reason)

    def stats(self) -> dict[str, Any]:
        return self.registry.stats()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started or self.shutting_down:
                return
            self._started = True
        self.broker.start()
        self.cleaner.start()
        for hook in self.on_start:
            # A hook that fails (e.g. Redis down while this worker boots) must
            # not stop the worker from serving streams: gunicorn would take a
            # failed boot as fatal and stop the whole instance.
            try:
                hook()
            except Exception:
                log.exception("start hook failed", extra={"event": "start_hook_failed"})
        log.info("worker started", extra={"event": "worker_started", "settings": self.settings.public()})

    @property
    def started(self) -> bool:
        return self._started

    def reconnect_delay_ms(self) -> int:
        """A browser ``retry:`` drawn from [STREAM_RETRY_MS, STREAM_RECONNECT_JITTER_MS]."""
        return random.randint(self.settings.retry_ms, self.settings.reconnect_jitter_ms)

    def mark_draining(self) -> None:
        """Flip /health to draining and refuse new streams. Safe in a signal handler:
        a plain attribute write, no lock (the handler may interrupt the holder)."""
        self.shutting_down = True
        self.registry.draining = True

    def shutdown(self, drain_seconds: float | None = None, wait: bool = True) -> None:
        """End every stream with ``event: shutdown`` and stop background work.

        With ``drain_seconds`` > 0 the streams are closed spread over that
        window so clients do not all reconnect in the same second.
        """
        self.mark_draining()
        self.registry.begin_drain()
        window = self.settings.drain_seconds if drain_seconds is None else drain_seconds
        clients = list(self.registry.clients())
        log.info(
            "shutdown: closing streams", extra={"event": "shutdown", "streams": len(clients), "drain_seconds": window}
        )
        for hook in self.on_shutdown:
            try:
                hook()
            except Exception:
                log.exception("shutdown hook failed")
        self.cleaner.stop()
        if window > 0 and len(clients) > 1:
            closer = threading.Thread(
                target=self._close_spread, args=(clients, window), name="jobstream-drain", daemon=True
            )
            closer.start()
            if wait:
                closer.join(window + 1)
        else:
            self.registry.close_all(SHUTDOWN, self.reconnect_delay_ms, clients)

    def _close_spread(self, clients: list[Client], window: float) -> None:
        step = window / len(clients)
        stop = threading.Event()
        for i, client in enumerate(clients):
            client.close(SHUTDOWN, self.reconnect_delay_ms())
            if i + 1 < len(clients):
                stop.wait(step)

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        while len(self.registry) and time.monotonic() < deadline:
            stop.wait(0.02)
        return not len(self.registry)

    def close(self) -> None:
        self._stats_copier.stop()
        self.broker.stop()


def _make_broker(settings: Settings, registry: Registry) -> Broker:
    """``REDIS_URL`` set: the Redis Stream; unset: in-process fan-out + SQLite."""
    if settings.redis_url:
        from streaming.redis_broker import RedisBroker

        return RedisBroker(
            registry, settings.redis_url, settings.history_size, fanout_run=max(1, settings.client_buffer // 2)
        )
    store = SqliteHistory(settings.jobs_db, settings.history_size) if settings.history_size else None
    return MemoryBroker(registry, settings.history_size, store)


def _log_closed(client: Client, reason: str) -> None:
    level = logging.WARNING if reason in ("evicted", "stale") else logging.INFO
    log.log(
        level,
        "stream closed",
        extra={
            "event": "stream_closed",
            "client_id": client.id,
            "ip": client.remote_addr,
            "reason": reason,
            "duration_seconds": round(time.monotonic() - client.connected_mono, 3),
            "events_sent": client.events_sent,
            "dropped": client.dropped,
        },
    )
