"""Metrics without a server: one metric update per publish, and the master's hooks.

What ``GET /metrics`` serves, with one and two workers, is in
``tests/integration/test_metrics_server.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest, values

from app import create_app
from server.settings import Settings
from streaming.core.client import Client
from streaming.core.topics import TopicFilter
from streaming.ops.metrics import Metrics
from streaming.ops.service import StreamingService
from tests.support.server import ROOT


def test_fanout_to_many_streams_touches_metrics_once_per_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hot-path rule: no metric call per event per client.
    app = create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), history_size=0))
    svc: StreamingService = app.extensions["jobstream"]
    clients = [Client.create(100, f"10.0.0.{n % 7}", "", TopicFilter()) for n in range(300)]
    for client in clients:
        assert svc.registry.admit(client) is None
    updates: list[float] = []
    original = values.MutexValue.inc

    def counting_inc(self: values.MutexValue, amount: float) -> None:
        updates.append(amount)
        original(self, amount)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(values.MutexValue, "inc", counting_inc)
    for n in range(20):
        svc.publish("hot", "message", n)
    assert all(c.writer.queue.qsize() == 20 for c in clients)
    assert len(updates) <= 20 * 3  # published + histogram bucket and sum, per publish
    svc.job_finished("completed", 2.5)
    metrics: Metrics = app.extensions["jobstream.metrics"]
    metrics.sync(svc.registry)
    text = generate_latest(metrics.exposed).decode()
    assert 'jobstream_job_duration_seconds_count{status="completed"} 1.0' in text
    assert "jobstream_events_published_total 20.0" in text
    svc.close()


def test_gunicorn_config_keeps_prometheus_out_of_the_master(tmp_path: Path) -> None:
    # prometheus_client picks its mode at import and imports ssl/socket; the
    # master must import neither before forking workers that gevent patches.
    code = """
import os, runpy, sys
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
conf = runpy.run_path("gunicorn.conf.py")
conf["on_starting"](None)
directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
for name in ("gauge_livesum_4242.db", "counter_4242.db", "gauge_livesum_4343.db"):
    open(os.path.join(directory, name), "w").close()
conf["child_exit"](None, type("W", (), {"pid": 4242})())
print(sorted(os.listdir(directory)))
assert "prometheus_client" not in sys.modules and "ssl" not in sys.modules, "imported in the master"
conf["on_exit"](None)
assert not os.path.exists(directory)
print("ok")
"""
    env = {"PATH": "/usr/bin:/bin", "JOBS_DB": f"{tmp_path}/jobs.db", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["['counter_4242.db',", "'gauge_livesum_4343.db']", "ok"], proc.stderr


def test_delivered_counts_this_worker_only_when_workers_share_a_table(tmp_path: Path) -> None:
    # Each worker's counter is summed across workers at scrape time, so it must
    # hold that worker's own deliveries, not the instance totals /health shows.
    from streaming.scaleout.instance import InstanceAdmission, InstanceTable

    table = InstanceTable.create(rows=4)
    try:
        other = table.claim(os.getppid())  # another live "worker", which delivered 500
        table.publish(other, {"total_messages": 500, "dropped": 7})
        app = create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), history_size=0))
        svc: StreamingService = app.extensions["jobstream"]
        svc.share_limits(InstanceAdmission(table, table.claim(os.getpid()), 100, 0))
        client = Client.create(100, "10.0.0.1", "", TopicFilter())
        assert svc.registry.admit(client) is None
        for n in range(3):
            svc.publish("t", "message", n)
        client.writer.events_sent = 3  # as the generator counts what it wrote
        assert svc.registry.stats()["total_messages"] == 503  # the instance, for /health
        text = app.test_client().get("/metrics").get_data(as_text=True)
        assert "jobstream_events_delivered_total 3.0" in text
        svc.close()
    finally:
        table.close()
