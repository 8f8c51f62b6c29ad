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
per-worker sync every ``SYNC_SECONDS`` and on each scrape. Jobs by status
are read from the job store at scrape time (the store is shared, so any
worker's answer is the instance's). Every label has a fixed set of values.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from streaming.events import Event
from streaming.registry import CAPACITY, CLIENT, DRAINING, EVICTED, PER_IP, SHUTDOWN, STALE, Client
from streaming.service import StreamingService

log = logging.getLogger("jobstream.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How stale another worker's delivered/dropped counts may be in a scrape.
SYNC_SECONDS = 1.0
JOB_STATUSES = ("pending", "in_progress", "completed", "cancelled", "error")
FINAL_STATUSES = ("completed", "cancelled", "error")
RESET_REASONS = ("malformed", "expired", "unknown", "overflow")
REPLAY_TRIGGERS = ("reconnect", "overflow")
# Publish = id + history append + fan-out to every local queue: microseconds
# to a few milliseconds; the top buckets catch a stalled history write.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)

bp = Blueprint("metrics", __name__)


def _bounded(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"


class Metrics:
    """One worker's metric objects and the hooks that move them."""

    def __init__(self, multiprocess_dir: str | None, job_counts: Callable[[], dict[str, int]] | None = None) -> None:
        # Multiprocess values live in files, not in a registry; what a scrape
        # exposes is then a collector that merges every worker's files.
        reg = None if multiprocess_dir else CollectorRegistry()
        self.exposed = reg or CollectorRegistry()
        if multiprocess_dir:
            MultiProcessCollector(self.exposed, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        self.exposed.register(_JobsCollector(job_counts))
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
        self.published = Counter("jobstream_events_published", "Events accepted by this instance.", registry=reg)
        self.delivered = Counter("jobstream_events_delivered", "Events written to streams.", registry=reg)
        self.dropped = Counter(
            "jobstream_buffer_full_drops",
            "Events a full client buffer could not take (healed by replay).",
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
        self.job_seconds = Histogram(
            "jobstream_job_duration_seconds",
            "Job run time from start to a final status.",
            ["status"],
            buckets=JOB_BUCKETS,
            registry=reg,
        )
        # Every label value exists from the start, so rates work from zero.
        for reason in (CAPACITY, PER_IP, DRAINING):
            self.rejected.labels(reason)
        for reason in (CLIENT, EVICTED, STALE, SHUTDOWN):
            self.disconnected.labels(reason)
        for trigger in REPLAY_TRIGGERS:
            self.replays.labels(trigger)
        for reason in RESET_REASONS:
            self.resets.labels(reason)
        for status in FINAL_STATUSES:
            self.job_seconds.labels(status)
        self._sync_lock = threading.Lock()
        self._seen_delivered = 0
        self._seen_dropped = 0

    # -- hooks (each called once per stream, publish, replay or job) ------

    def on_admit(self, client: Client, refused: str | None) -> None:
        if refused is None:
            self.opened.inc()
            self.active.inc()
        else:
            self.rejected.labels(_bounded(refused, (CAPACITY, PER_IP, DRAINING))).inc()

    def on_close(self, client: Client, reason: str) -> None:
        self.active.dec()
        self.disconnected.labels(_bounded(reason, (CLIENT, EVICTED, STALE, SHUTDOWN))).inc()

    def on_publish(self, event: Event, seconds: float) -> None:
        self.published.inc()
        self.broadcast_seconds.observe(seconds)

    def on_replay(self, trigger: str) -> None:
        self.replays.labels(_bounded(trigger, REPLAY_TRIGGERS)).inc()

    def on_reset(self, reason: str) -> None:
        self.resets.labels(_bounded(reason, RESET_REASONS)).inc()

    def on_job_finished(self, status: str, seconds: float) -> None:
        self.job_seconds.labels(_bounded(status, FINAL_STATUSES)).observe(max(0.0, seconds))

    def sync(self, stats: dict[str, Any]) -> None:
        """Copy the registry's exact delivered/dropped totals (they only grow)."""
        with self._sync_lock:
            delivered, dropped = int(stats["total_messages"]), int(stats["dropped"])
            if delivered > self._seen_delivered:
                self.delivered.inc(delivered - self._seen_delivered)
                self._seen_delivered = delivered
            if dropped > self._seen_dropped:
                self.dropped.inc(dropped - self._seen_dropped)
                self._seen_dropped = dropped


class _JobsCollector:
    """``jobstream_jobs{status}``, counted by the job store when scraped."""

    def __init__(self, job_counts: Callable[[], dict[str, int]] | None) -> None:
        self.job_counts = job_counts

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.job_counts() if self.job_counts is not None else {}
        except Exception:
            log.exception("metrics: job counts unavailable")
            return
        family = GaugeMetricFamily("jobstream_jobs", "Jobs in the store, by status.", labels=["status"])
        for status in JOB_STATUSES:
            family.add_metric([status], counts.get(status, 0))
        yield family


class _Syncer:
    """Every ``SYNC_SECONDS``, copy the registry counters; waits on an event, never sleeps."""

    def __init__(self, metrics: Metrics, service: StreamingService) -> None:
        self.metrics = metrics
        self.service = service
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="jobstream-metrics", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            try:
                self.metrics.sync(self.service.registry.stats())
            except Exception:
                log.exception("metrics sync failed; will retry")

    def stop(self) -> None:
        self._stop.set()
        self.metrics.sync(self.service.registry.stats())


def init_app(app: Flask, service: StreamingService, environ: dict[str, str] | None = None) -> Metrics:
    directory = (environ if environ is not None else os.environ).get(MULTIPROC_ENV) or None
    # The jobs package may install job_counts after this runs.
    metrics = Metrics(directory, lambda: service.job_counts() if service.job_counts is not None else {})
    service.registry.on_admit = metrics.on_admit
    service.close_hooks.append(metrics.on_close)
    service.publish_hooks.append(metrics.on_publish)
    service.on_replay = metrics.on_replay
    service.on_reset = metrics.on_reset
    service.job_finished_hooks.append(metrics.on_job_finished)
    syncer = _Syncer(metrics, service)
    service.on_start.append(syncer.start)
    service.on_shutdown.append(syncer.stop)
    app.extensions["jobstream.metrics"] = metrics
    app.register_blueprint(bp)
    return metrics


@bp.get("/metrics")
def scrape() -> Response:
    metrics: Metrics = current_app.extensions["jobstream.metrics"]
    service: StreamingService = current_app.extensions["jobstream"]
    metrics.sync(service.registry.stats())
    body = generate_latest(metrics.exposed)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
