"""One worker's streaming machinery: registry, broker, cleanup, shutdown.

``create_app`` builds a ``StreamingService`` (no threads yet); ``start`` runs
inside the worker after gevent has patched (gunicorn's ``post_worker_init``,
or lazily on the first request outside gunicorn).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from server.background import Background
from server.settings import Settings
from server.tokens import Grant, TokenVerifier
from streaming.core.broker import Broker, MemoryBroker
from streaming.core.client import Client
from streaming.core.events import PUBLIC, Delivery, Event, data_text
from streaming.core.history import SqliteHistory
from streaming.core.reasons import NOT_KEEPING_UP, CloseReason, RefusalReason
from streaming.core.registry import Admission, Registry
from streaming.core.topics import TopicFilter
from streaming.ops.canary import Canary
from streaming.ops.cleanup import Cleaner
from streaming.ops.observers import Hooks, Observer

if TYPE_CHECKING:
    from streaming.scaleout.fleet import Fleet

PRIVATE_NEEDS_AUTH = "private events need STREAM_AUTH=optional or required"

log = logging.getLogger("jobstream.streaming")

# How often a worker copies its counters to the instance table.
STATS_COPY_SECONDS = 1.0
# How long ``close`` waits for writes already under way before it closes the broker.
WRITES_SETTLE_SECONDS = 5.0


class ShuttingDown(Exception):
    """The worker is draining: it accepts no more writes (answered with 503)."""


class JobView(Protocol):
    """What streams need to know about jobs (provided by the jobs package)."""

    statuses: tuple[str, ...]  # every job status, for /health

    def snapshot(self, topics: TopicFilter, reader: Grant | None) -> dict[str, Any]:
        """The ``event: snapshot`` body for a stream with these topics, of
        the jobs ``reader`` (the stream's grant, ``None``: anonymous) may see."""
        ...

    def counts(self) -> dict[str, int]:
        """Jobs by status, and ``total``, for ``/health``."""
        ...


class StreamingService:
    def __init__(
        self,
        settings: Settings,
        broker: Broker | None = None,
        clock: Callable[[], float] = time.monotonic,
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.settings = settings
        # Checks the tokens of streams under STREAM_AUTH (streaming.transport.connect).
        self.verifier = verifier or TokenVerifier.from_settings(settings)
        self.clock = clock
        self.started_at = time.time()
        self.hooks = Hooks()
        self.registry = Registry(
            max_connections=settings.max_connections,
            send_timeout_seconds=settings.send_timeout_seconds,
            keepalive_seconds=settings.keepalive_seconds,
            max_connections_per_ip=settings.max_connections_per_ip,
            clock=clock,
            on_admit=self._admitted,
            on_close=self._closed,
        )
        self.broker: Broker = broker or _make_broker(settings, self.registry)
        self.cleaner = Cleaner(
            self.registry, settings.cleanup_seconds, clock, keepalive_seconds=settings.keepalive_seconds
        )
        # Its own clock, not ``clock``: tests that move the service's clock
        # (sweeps, token expiry) must not make the canary look stalled.
        self.canary = Canary(self.broker, settings.canary_seconds, self.hooks)
        self.registry.listen_internal(self.canary.arrived)
        # With Redis: fleet-wide limits and the fleet's /admin/clients (streaming.scaleout.fleet).
        self.fleet = _make_fleet(settings, self.registry, self.client_infos) if settings.redis_url else None
        self.jobs: JobView | None = None
        self._lock = threading.Lock()
        self._started = False
        self.shutting_down = False
        # Writes under way (``accepting_write``); ``close`` waits for them.
        # One entry per write under way: list append and pop are atomic with
        # or without gevent, and take no lock. (A Condition here halved the
        # publish rate under gevent: docs/benchmarks.md, run S.)
        self._writes: list[None] = []
        self._stats_copier = Background("jobstream-instance-stats", self._copy_stats)
        self.observe(_CloseLog())
        if self.fleet is not None:
            self.observe(_FleetAgent(self.fleet))

    # -- registration -----------------------------------------------------

    def observe(self, observer: Observer) -> None:
        """Register ``observer`` (``streaming.ops.observers``), before ``start``."""
        self.hooks.add(observer)

    def provide_jobs(self, jobs: JobView) -> None:
        """The jobs package: the snapshot streams start with, and /health's counts."""
        self.jobs = jobs

    def share_limits(self, admission: Admission, peers: Any = None) -> None:
        """Let ``admission`` decide capacity for the whole instance, and make a
        publish wait for the host's other workers (``peers``); before ``start``."""
        self.registry.admission = admission
        if peers is not None:
            self.broker.attach_peers(peers)
        self.observe(_StatsCopier(self._stats_copier))

    def _copy_stats(self, stop: threading.Event) -> None:
        # Other workers read this worker's message counts from the shared
        # table; admit and remove update the rest as they happen.
        while not stop.wait(STATS_COPY_SECONDS):
            self.registry.stats()

    # -- events and what observers hear -------------------------------------

    def publish(self, topic: str, event: str, data: Any, delivery: Delivery = PUBLIC) -> Event:
        """Publish one event (no topic or name checks: the callers' job).

        ``delivery.private`` with ``STREAM_AUTH=off`` is a ``ValueError``:
        every stream is anonymous there, so the event would reach nobody but
        look private. ``delivery.owner`` (a job's owner) makes it readable by
        that user only (and admins); with ``STREAM_AUTH=off`` readers are not
        identified and an owned event is public, as every job was before owners.
        """
        if self.settings.stream_auth == "off":
            if delivery.private:
                raise ValueError(PRIVATE_NEEDS_AUTH)
            if delivery.owner is not None:
                delivery = dataclasses.replace(delivery, owner=None)
        text = data_text(data)
        started = time.perf_counter()
        published = self.broker.publish(topic, event, text, delivery)
        if self.hooks.get("published"):
            self.hooks.call("published", published, time.perf_counter() - started)
        return published

    @contextmanager
    def accepting_write(self) -> Iterator[None]:
        """Around a write a client asked for (a publish, a job created or cancelled).

        Raises ``ShuttingDown`` once draining began. gunicorn keeps accepting
        requests for up to a second after the broker is closed (until its loop
        notices ``alive`` is false), so a write must be refused, not attempted.
        A write that got in before the drain finishes before ``close`` closes
        the broker, so whatever was acknowledged is stored.
        """
        writes = self._writes
        writes.append(None)  # counted first: ``close`` drains before it waits
        try:
            if self.shutting_down:
                raise ShuttingDown
            yield
        finally:
            writes.pop()

    def job_finished(self, status: str, seconds: float) -> None:
        """A job reached ``status`` (completed, cancelled, error) after running ``seconds``."""
        self.hooks.call("job_finished", status, seconds)

    def replayed(self, trigger: str) -> None:
        self.hooks.call("replayed", trigger)

    def reset(self, reason: str) -> None:
        self.hooks.call("reset", reason)

    def _admitted(self, client: Client, refused: RefusalReason | None) -> None:
        self.hooks.call("admitted", client, refused)

    def _closed(self, client: Client, reason: CloseReason) -> None:
        self.hooks.call("closed", client, reason)

    def stats(self) -> dict[str, Any]:
        return self.registry.stats()

    def client_infos(self) -> Iterator[dict[str, Any]]:
        """One dict per open stream of this worker (``GET /admin/clients``)."""
        now = self.clock()
        return (client.info(now) for client in self.registry.clients())

    def client_listing(self, host: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """``GET /admin/clients``: every stream of the fleet (``"fleet"``, from
        Redis), or this worker's (``"local"``: no Redis, or it cannot be read);
        each with ``host`` and ``worker_pid``, only ``host``'s when given."""
        if self.fleet is not None:
            infos = self.fleet.view(host)
            if infos is not None:
                return infos, "fleet"
        name = self.host_name
        if host is not None and host != name:
            return [], "local"
        pid = os.getpid()
        return [{**info, "host": name, "worker_pid": pid} for info in self.client_infos()], "local"

    @property
    def host_name(self) -> str:
        """``INSTANCE_NAME``, or the machine's host name."""
        return self.settings.instance_name or socket.gethostname()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started or self.shutting_down:
                return
            self._started = True
        self.broker.start()
        self.cleaner.start()
        self.canary.start()
        # A hook that fails (e.g. Redis down while this worker boots) must
        # not stop the worker from serving streams: gunicorn would take a
        # failed boot as fatal and stop the whole instance.
        self.hooks.call("started")
        log.info("worker started", extra={"event": "worker_started", "settings": self.settings.public()})

    @property
    def started(self) -> bool:
        return self._started

    def reconnect_delay_ms(self) -> int:
        """A browser ``retry:`` drawn from [STREAM_RETRY_MS, STREAM_RECONNECT_JITTER_MS]."""
        return random.randint(self.settings.retry_ms, self.settings.reconnect_jitter_ms)

    def mark_draining(self) -> None:
        """Flip /health to draining, refuse new streams (the soft way) and writes
        (503). Safe in a signal handler: plain attribute writes, no lock (the
        handler may interrupt the holder)."""
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
        self.hooks.call("stopping")
        self.cleaner.stop()
        self.canary.stop()
        if window > 0 and len(clients) > 1:
            closer = threading.Thread(
                target=self._close_spread, args=(clients, window), name="jobstream-drain", daemon=True
            )
            closer.start()
            if wait:
                closer.join(window + 1)
        else:
            self.registry.close_all(CloseReason.SHUTDOWN, self.reconnect_delay_ms, clients)

    def _close_spread(self, clients: list[Client], window: float) -> None:
        step = window / len(clients)
        stop = threading.Event()
        for i, client in enumerate(clients):
            client.close(CloseReason.SHUTDOWN, self.reconnect_delay_ms())
            if i + 1 < len(clients):
                stop.wait(step)

    def wait_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        while len(self.registry) and time.monotonic() < deadline:
            stop.wait(0.02)
        return not len(self.registry)

    def _settle(self, timeout: float) -> bool:
        """Wait (polling, rarely: only at shutdown) until no write is under way."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while self._writes and time.monotonic() < deadline:
            pause.wait(0.01)
        return not self._writes

    def close(self, settle_seconds: float = WRITES_SETTLE_SECONDS) -> None:
        """Stop for good: refuse new writes, let those under way finish, close the broker."""
        self.mark_draining()
        self._stats_copier.stop()
        self.canary.stop()
        if not self._settle(settle_seconds):
            log.warning("closing with writes under way", extra={"event": "close_writes_pending"})
        self.broker.stop()


def _make_broker(settings: Settings, registry: Registry) -> Broker:
    """``REDIS_URL`` set: the Redis Stream; unset: in-process fan-out + SQLite."""
    if settings.redis_url:
        from streaming.scaleout.redis_broker import RedisBroker

        return RedisBroker(
            registry, settings.redis, settings.history_size, fanout_run=max(1, settings.client_buffer // 2)
        )
    store = SqliteHistory(settings.jobs_db, settings.history_size) if settings.history_size else None
    return MemoryBroker(registry, settings.history_size, store)


def _make_fleet(settings: Settings, registry: Registry, listing: Callable[[], Iterable[dict[str, Any]]]) -> Fleet:
    """Fleet limits gate admissions only when one is set; the view is kept anyway."""
    from streaming.scaleout.fleet import Fleet
    from streaming.scaleout.redis_client import connect

    target = settings.redis
    fleet = Fleet(
        lambda: connect(target),
        listing,
        host=settings.instance_name,
        lease_seconds=settings.fleet_lease_seconds,
        max_fleet=settings.max_connections_fleet,
        max_per_ip=settings.max_connections_per_ip,
    )
    if fleet.limits:
        registry.gate = fleet
    return fleet


class _FleetAgent(Observer):
    """Starts the fleet's agent with the worker; at shutdown hands its slots back."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def started(self) -> None:
        self.fleet.start()

    def stopping(self) -> None:
        self.fleet.stop()


class _StatsCopier(Observer):
    def __init__(self, background: Background) -> None:
        self.background = background

    def started(self) -> None:
        self.background.start()


class _CloseLog(Observer):
    """The ``stream closed`` log line."""

    def closed(self, client: Client, reason: CloseReason) -> None:
        writer = client.writer
        log.log(
            logging.WARNING if reason in NOT_KEEPING_UP else logging.INFO,
            "stream closed",
            extra={
                "event": "stream_closed",
                "client_id": client.id,
                "transport": client.transport,
                "ip": client.remote_addr,
                "reason": reason,
                "duration_seconds": round(time.monotonic() - client.connected_mono, 3),
                "events_sent": writer.events_sent,
                "dropped": writer.dropped,
                "conflated": writer.conflated,
            },
        )
