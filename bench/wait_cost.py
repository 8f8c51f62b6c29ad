"""The cost of WAIT per publish: python -m bench.wait_cost [--publishes N] [--rounds R].

One Sentinel group (a primary, one replica, one sentinel; tests/support/redis_ha)
and two gunicorn servers on it, one with ``REDIS_MIN_REPLICAS_ACK=1`` and one
with ``0``. Sequential ``POST /events`` alternate between the two servers in
the same run, so both see the same machine load; the output is the p50 and
p99 of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.redis_ha import SentinelGroup
from tests.support.server import ServerProcess


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wait_cost", description=__doc__)
    parser.add_argument("--publishes", type=int, default=2000, help="publishes per server per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-wait-"))
    group = SentinelGroup(work / "redis", replicas=1).start()
    servers = {
        acks: ServerProcess(work / f"server-{acks}", env={"REDIS_URL": group.url, "REDIS_MIN_REPLICAS_ACK": str(acks)})
        for acks in (0, 1)
    }
    try:
        for server in servers.values():
            server.start()
        clients = {acks: httpx.Client(base_url=server.url(), timeout=5) for acks, server in servers.items()}
        for round_ in range(args.rounds):
            took: dict[int, list[float]] = {0: [], 1: []}
            for n in range(args.publishes):
                for acks, http in clients.items():
                    started = time.perf_counter()
                    reply = http.post("/events", json={"topic": "bench/wait", "data": {"n": n}})
                    took[acks].append((time.perf_counter() - started) * 1000)
                    assert reply.status_code == 202, reply.text
            p = {acks: (percentile(ms, 0.5), percentile(ms, 0.99), statistics.mean(ms)) for acks, ms in took.items()}
            print(
                f"round {round_ + 1}: no WAIT p50 {p[0][0]:.3f} ms p99 {p[0][1]:.3f} ms | "
                f"WAIT 1 p50 {p[1][0]:.3f} ms p99 {p[1][1]:.3f} ms | "
                f"ratio p50 {p[1][0] / p[0][0]:.2f} p99 {p[1][1] / p[0][1]:.2f}"
            )
    finally:
        for server in servers.values():
            server.stop(timeout=10)
        group.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
