"""Smoke test of the benchmark's WebSocket path: the Go load generator's
RFC 6455 client against a real Jobstream on /ws (20 sockets, one round).

The same measure() as the SSE smoke test; what it checks is that the bench
can be trusted over /ws: every socket subscribed before publishing starts,
every event delivered once, in order, with a latency.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import loadgen, servers
from bench.measure import measure
from bench.scenarios import smoke

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs golang-go to build bench/loadgen")


@pytest.mark.timeout(60)
def test_bench_fanout_over_ws_delivers_every_event_once() -> None:
    loadgen.build()
    connect, fanout = smoke(20)
    with servers.jobstream(ROOT, 200, transport="ws") as target:
        assert (target.name, target.stream_path, target.transport) == ("jobstream-ws", "/ws", "ws")

        c = measure(target, connect)
        assert c["connected"] == 20
        assert c["connect_failures"] == 0
        assert c["server_active"] == 20  # /health counted the sockets while they were open

        f = measure(target, fanout)
        assert f["connected"] == 20
        assert f["publish_errors"] == 0
        assert f["published"] >= 15  # 20/s for 1 s
        assert f["lost"] == 0
        assert f["duplicates"] == 0
        assert f["out_of_order"] == 0
        assert f["stream_ends"] == 0
        assert f["raw"]["deliveries"] == 20 * f["published"]
        assert 0 <= f["p50_ms"] <= f["p99_ms"] <= f["max_ms"] < 5_000


@pytest.mark.timeout(60)
def test_bench_ws_client_is_refused_like_sse_at_capacity() -> None:
    # 5 sockets on a server that takes 3: the load generator reads the 1013
    # close frame (a WebSocket has no 503) and counts it as a failure kind.
    loadgen.build()
    connect, _ = smoke(5)
    with servers.jobstream(ROOT, 3, transport="ws") as target:
        c = measure(target, connect)
        assert c["connected"] == 3
        assert c["failures_by_kind"] == {"close_1013": 2}
