"""Smoke test of the benchmark suite (bench/): tiny load, real server.

Runs the bench's own code path (Go load generator + measure) against a
Jobstream gunicorn started here on a free port, 20 streams, a few events,
one round, no peers. Benchmarks proper stay out of the suite: python -m bench.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import loadgen, servers
from bench.auth import BenchAuth
from bench.measure import measure
from bench.procs import free_port, wait_http_ok
from bench.scenarios import smoke
from bench.servers import Target

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs golang-go to build bench/loadgen")


@pytest.fixture
def jobstream(tmp_path: Path) -> Iterator[Target]:
    port = free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        STREAM_MAX_CONNECTIONS="200",
        JOBS_DB=str(tmp_path / "jobs.db"),
    )
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = wait_http_ok(f"http://127.0.0.1:{port}/health", 20, alive=lambda: proc.poll() is None)
        assert ready, (tmp_path / "server.log").read_text(errors="replace")[-2000:]
        yield Target("jobstream", port, proc.pid, "/stream?topic={topic}", "/events", "jobstream")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.timeout(60)
def test_bench_smoke(jobstream: Target) -> None:
    loadgen.build()
    connect, fanout = smoke(20)

    c = measure(jobstream, connect)
    assert c["connected"] == 20
    assert c["connect_failures"] == 0
    assert c["connect_rate"] > 0
    assert abs(c["rss_per_stream"]) < 10_000_000  # 20 streams: noise dominates

    f = measure(jobstream, fanout)
    raw = f["raw"]
    assert f["connected"] == 20
    assert f["published"] >= 15  # 20/s for 1 s
    assert f["publish_errors"] == 0
    assert f["lost"] == 0
    assert f["duplicates"] == 0
    assert f["out_of_order"] == 0
    assert raw["deliveries"] == 20 * f["published"]
    assert 0 <= f["p50_ms"] <= f["p99_ms"] <= f["max_ms"] < 5_000
    assert f["health_errors"] == 0


@pytest.mark.timeout(90)
def test_bench_auth_target_authenticates_every_stream() -> None:
    loadgen.build()
    connect, fanout = smoke(20)
    with servers.jobstream(ROOT, 200, auth=BenchAuth.random()) as target:
        assert target.name == "jobstream-auth"
        f = measure(target, fanout)
        assert f["connected"] == 20
        assert f["connect_failures"] == 0
        assert f["publish_errors"] == 0
        assert f["lost"] == 0
        assert f["raw"]["deliveries"] == 20 * f["published"] > 0
        # Without the tokens the same server refuses every stream.
        anonymous = measure(dataclasses.replace(target, auth=None), connect)
        assert anonymous["failures_by_kind"] == {"status_401": 20}
