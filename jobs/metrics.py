"""Job metrics: ``jobstream_jobs{status}`` and ``jobstream_job_duration_seconds``.

Jobs by status are read from the job store at scrape time (the store is
shared, so any worker's answer is the instance's); run times are observed
once per job reaching a final status, through the streaming service's
``job_finished`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from jobs.states import TERMINAL, Status
from streaming import Metrics, Observer

log = logging.getLogger("jobstream.metrics")

JOB_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
FINAL_STATUSES = tuple(s.value for s in Status if s in TERMINAL)


class JobMetrics(Observer):
    def __init__(self, metrics: Metrics, counts: Callable[[], dict[str, int]]) -> None:
        self.seconds = Histogram(
            "jobstream_job_duration_seconds",
            "Job run time from start to a final status.",
            ["status"],
            buckets=JOB_BUCKETS,
            registry=metrics.registry,
        )
        for status in FINAL_STATUSES:
            self.seconds.labels(status)
        metrics.exposed.register(_JobsCollector(counts))

    def job_finished(self, status: str, seconds: float) -> None:
        self.seconds.labels(status if status in FINAL_STATUSES else "other").observe(max(0.0, seconds))


class _JobsCollector:
    """``jobstream_jobs{status}``, counted by the job store when scraped."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.counts()
        except Exception:
            log.exception("metrics: job counts unavailable")
            return
        family = GaugeMetricFamily("jobstream_jobs", "Jobs in the store, by status.", labels=["status"])
        for status in Status:
            family.add_metric([status.value], counts.get(status.value, 0))
        yield family
