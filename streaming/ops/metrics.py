"""Prometheus metrics at ``GET /metrics``, correct with several gunicorn workers.

Multiprocess mode: each worker writes its values to mmap files in
``PROMETHEUS_MULTIPROC_DIR`` and a scrape, answered by any worker, merges
every file. prometheus_client picks the mode when it is *imported*, so
``gunicorn.conf.py`` sets the directory in the master before any worker
imports it, empties it at start-up and calls ``mark_process_dead`` when a
worker exits (its live gauges disappear; its counters are kept, as counters
must be). Without the variable (tests, ``flask run``) each app gets a private
``CollectorRegistry``, so building several apps in one process is fine.

Hot path: nothing here runs per event per client. Counters move per stream
opened or closed (registry hooks), per publish (one counter and one
histogram observation), and per replay or reset; events delivered and
buffer-full drops are copied from the registry's own exact counters by a
per-worker sync every ``SYNC_SECONDS`` and on each scrape. Every label has
a fixed set of values. The jobs package adds its own metrics (jobs/metrics.py).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Protocol

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from server.background import Background
from streaming import EXTENSION as EXTENSION_SERVICE
from streaming.core.client import Client
from streaming.core.events import Event
from streaming.core.reasons import CloseReason, RefusalReason
from streaming.core.registry import Registry
from streaming.ops.observers import Observer
from streaming.ops.service import StreamingService

log = logging.getLogger("jobstream.metrics")


class FleetState(Protocol):
    """What the metrics read of ``streaming.scaleout.fleet.Fleet``."""

    @property
    def up(self) -> bool: ...

    fallbacks: int


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How stale another worker's delivered/dropped counts may be in a scrape.
SYNC_SECONDS = 1.0
RESET_REASONS = ("malformed", "expired", "unknown", "overflow")
REPLAY_TRIGGERS = ("reconnect", "overflow")
# Publish = id + history append + fan-out to every local queue: microseconds
# to a few milliseconds; the top buckets catch a stalled history write.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Canary round trips: microseconds embedded, a millisecond or two through
# Redis; the top buckets catch a stalled reader (a miss is one interval late).
CANARY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CLOSE_REASONS = (
    CloseReason.CLIENT,
    CloseReason.EVICTED,
    CloseReason.STALE,
    CloseReason.SHUTDOWN,
    CloseReason.TOKEN_EXPIRED,
)
EXTENSION = "jobstream.metrics"

bp = Blueprint("metrics", __name__)


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"


class Metrics(Observer):
    """One worker's stream metrics, moved by the service's hooks.

    Other packages add their own metrics with ``registry`` (where new metric
    objects go: ``None`` in multiprocess mode) and ``exposed.register`` (a
    collector read at scrape time).
    """

    def __init__(self, multiprocess_dir: str | None) -> None:
        # Multiprocess values live in files, not in a registry; what a scrape
        # exposes is then a collector that merges every worker's files.
        reg = None if multiprocess_dir else CollectorRegistry()
        self.registry = reg
        self.exposed = reg or CollectorRegistry()
        if multiprocess_dir:
            MultiProcessCollector(self.exposed, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        self.active = Gauge(
            "jobstream_connections_active", "Open /stream connections.", multiprocess_mode="livesum", registry=reg
        )
        self.opened = Counter("jobstream_connections_opened", "Streams accepted.", registry=reg)
        self.rejected = Counter(
            "jobstream_connections_rejected", "Streams refused, by reason.", ["reason"], registry=reg
        )
        self.disconnected = Counter(
            "jobstream_connections_closed", "Streams ended, by reason.", ["reason"], registry=reg
        )
        self.published_total = Counter("jobstream_events_published", "Events accepted by this instance.", registry=reg)
        self.delivered = Counter("jobstream_events_delivered", "Events written to streams.", registry=reg)
        self.dropped = Counter(
            "jobstream_buffer_full_drops",
            "Events a full client buffer could not take (healed by replay).",
            registry=reg,
        )
        self.conflated = Counter(
            "jobstream_events_conflated",
            "Queued low-priority events a full buffer replaced with a newer one of their key.",
            registry=reg,
        )
        self.replays = Counter("jobstream_replays", "History replays, by trigger.", ["trigger"], registry=reg)
        self.resets = Counter(
            "jobstream_resets", "event: reset sent (replay impossible), by reason.", ["reason"], registry=reg
        )
        self.broadcast_seconds = Histogram(
            "jobstream_broadcast_latency_seconds",
            "Time to publish one event: id, history and fan-out to local queues.",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.canary_delivery = Histogram(
            "jobstream_canary_delivery_seconds",
            "Time from a worker's canary publish to its arrival through the same worker's fan-out.",
            buckets=CANARY_BUCKETS,
            registry=reg,
        )
        self.canary_misses = Counter(
            "jobstream_canary_missed",
            "Canaries not back through the fan-out when the next was due (streaming/ops/canary.py).",
            registry=reg,
        )
        # Set by every worker (``gauges``): the instance's limit is the largest
        # (they are all equal), the broker is up only if every worker's reader is.
        self.max_connections = Gauge(
            "jobstream_connections_max",
            "STREAM_MAX_CONNECTIONS: open streams allowed per instance.",
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.broker_up = Gauge(
            "jobstream_broker_up",
            "1 while the broker takes events (Redis reachable; always 1 embedded), 0 otherwise.",
            multiprocess_mode="livemin",
            registry=reg,
        )
        # Every label value exists from the start, so rates work from zero.
        for refusal in RefusalReason:
            self.rejected.labels(refusal)
        for reason in CLOSE_REASONS:
            self.disconnected.labels(reason)
        for trigger in REPLAY_TRIGGERS:
            self.replays.labels(trigger)
        for reset in RESET_REASONS:
            self.resets.labels(reset)
        self._sync_lock = threading.Lock()
        self._fleet: FleetState | None = None
        self._seen_fallbacks = 0
        self._seen_delivered = 0
        self._seen_dropped = 0
        self._seen_conflated = 0

    # -- hooks (each called once per stream, publish, replay or reset) ----

    def admitted(self, client: Client, refused: RefusalReason | None) -> None:
        if refused is None:
            self.opened.inc()
            self.active.inc()
        else:
            self.rejected.labels(refused).inc()

    def closed(self, client: Client, reason: CloseReason) -> None:
        self.active.dec()
        self.disconnected.labels(_bounded(reason, CLOSE_REASONS)).inc()

    def published(self, event: Event, seconds: float) -> None:
        self.published_total.inc()
        self.broadcast_seconds.observe(seconds)

    def replayed(self, trigger: str) -> None:
        self.replays.labels(_bounded(trigger, REPLAY_TRIGGERS)).inc()

    def reset(self, reason: str) -> None:
        self.resets.labels(_bounded(reason, RESET_REASONS)).inc()

    def canary_arrived(self, seconds: float) -> None:
        self.canary_delivery.observe(seconds)

    def canary_missed(self) -> None:
        self.canary_misses.inc()

    def gauges(self, service: StreamingService) -> None:
        """This worker's view of its limit and its broker (every sync and scrape)."""
        self.max_connections.set(service.registry.max_connections)
        self.broker_up.set(1 if service.broker.healthy else 0)

    def watch_fleet(self, fleet: FleetState) -> None:
        """With Redis: whether admissions count fleet-wide, and those that could not."""
        self._fleet = fleet
        self.fleet_up = Gauge(
            "jobstream_fleet_limits_up",
            "1 while this worker counts streams fleet-wide in Redis; 0 while it admits on the instance's"
            " limits only (Redis unreachable).",
            multiprocess_mode="livemin",
            registry=self.registry,
        )
        self.fleet_fallbacks = Counter(
            "jobstream_fleet_fallback_admissions",
            "Stream admissions decided on the instance's limits only because Redis could not count them.",
            registry=self.registry,
        )
        self.fleet_up.set(1)

    def sync(self, registry: Registry) -> None:
        """Copy this worker's exact delivered/dropped/conflated totals (they only grow).

        This worker's own, never the instance's: every worker's counter is
        summed across the multiprocess files at scrape time.
        """
        stats = registry.stats(instance=False)
        with self._sync_lock:
            delivered, dropped = int(stats["total_messages"]), int(stats["dropped"])
            if delivered > self._seen_delivered:
                self.delivered.inc(delivered - self._seen_delivered)
                self._seen_delivered = delivered
            if dropped > self._seen_dropped:
                self.dropped.inc(dropped - self._seen_dropped)
                self._seen_dropped = dropped
            conflated = int(stats["conflated"])
            if conflated > self._seen_conflated:
                self.conflated.inc(conflated - self._seen_conflated)
                self._seen_conflated = conflated
            fleet = self._fleet
            if fleet is not None:
                self.fleet_up.set(1 if fleet.up else 0)
                if fleet.fallbacks > self._seen_fallbacks:
                    self.fleet_fallbacks.inc(fleet.fallbacks - self._seen_fallbacks)
                    self._seen_fallbacks = fleet.fallbacks


class _Syncer(Observer):
    """Every ``SYNC_SECONDS``, copy the registry counters; waits on an event, never sleeps."""

    def __init__(self, metrics: Metrics, service: StreamingService) -> None:
        self.metrics = metrics
        self.service = service
        self._loop = Background("jobstream-metrics", self._run)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(SYNC_SECONDS):
            try:
                self.metrics.sync(self.service.registry)
                self.metrics.gauges(self.service)
            except Exception:
                log.exception("metrics sync failed; will retry")

    def started(self) -> None:
        self.metrics.gauges(self.service)
        self._loop.start()

    def stopping(self) -> None:
        self._loop.stop()
        self.metrics.sync(self.service.registry)


def init_app(app: Flask, service: StreamingService, environ: dict[str, str] | None = None) -> Metrics:
    directory = (environ if environ is not None else os.environ).get(MULTIPROC_ENV) or None
    metrics = Metrics(directory)
    service.observe(metrics)
    service.observe(_Syncer(metrics, service))
    if service.fleet is not None:
        metrics.watch_fleet(service.fleet)
    app.extensions[EXTENSION] = metrics
    app.register_blueprint(bp)
    return metrics


def metrics_of(app: Flask) -> Metrics:
    metrics: Metrics = app.extensions[EXTENSION]
    return metrics


@bp.get("/metrics")
def scrape() -> Response:
    metrics = metrics_of(current_app)
    service: StreamingService = current_app.extensions[EXTENSION_SERVICE]
    metrics.sync(service.registry)
    metrics.gauges(service)
    body = generate_latest(metrics.exposed)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
