"""What one fleet admission costs, in-process under gevent, on a real redis-server.

    python -m bench.fleet_admission [--n 5000] [--workers 4]

Starts its own ``redis-server`` on a free port, ``--workers`` fleet agents
(one of them admits, the others only hold leases, so the script sums over
them), then: ``--n`` admissions one after another (a quiet server: one round
trip each), and ``--n`` from 500 greenlets at once (a connect storm: the agent
batches them); and, for comparison, a plain ``PING``. Prints the wall time and
this process's CPU per admission, and Redis's own time per script call
(``INFO commandstats``). Read it with the connect scenario of ``python -m bench``
(targets ``jobstream-redis`` and ``jobstream-redis-fleet``).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from bench.procs import free_port  # noqa: E402
from streaming.core.client import Client  # noqa: E402
from streaming.core.topics import TopicFilter  # noqa: E402
from streaming.scaleout.fleet import Fleet  # noqa: E402
from streaming.scaleout.redis_client import connect  # noqa: E402

STORM_GREENLETS = 500


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(n: int, run: Callable[[], object]) -> tuple[float, float]:
    """(wall us, CPU us) per item of ``run``, which does ``n`` items."""
    started, cpu0 = time.perf_counter(), cpu()
    run()
    return (time.perf_counter() - started) / n * 1e6, (cpu() - cpu0) / n * 1e6


def script_stats(r: Any) -> dict[str, Any]:
    stats: dict[str, Any] = r.info("commandstats").get("cmdstat_evalsha", {})
    r.config_resetstat()
    return stats


def measure(url: str, n: int, workers: int) -> None:
    r = connect(url)
    fleets = [
        Fleet(lambda: connect(url), list, host=f"h{i}", lease_seconds=10, max_fleet=10**6, max_per_ip=10**6)
        for i in range(workers)
    ]
    for fleet in fleets:
        fleet.start()
    gevent.sleep(0.3)
    fleet = fleets[0]
    clients = [Client.create(4, f"10.{i % 200}.{i // 200 % 200}.1", "bench", TopicFilter()) for i in range(2 * n)]
    wall, used = timed(n, lambda: [r.ping() for _ in range(n)])
    print(f"PING: {wall:.0f} us wall, {used:.0f} us CPU")
    script_stats(r)
    wall, used = timed(n, lambda: [fleet.enter(c) for c in clients[:n]])
    stats = script_stats(r)
    print(
        f"one at a time: {wall:.0f} us wall, {used:.0f} us CPU per admission;"
        f" {stats.get('calls')} script calls, {stats.get('usec_per_call')} us each in Redis"
    )
    storm = clients[n:]
    per = max(1, n // STORM_GREENLETS)

    def burst(k: int) -> None:
        for c in storm[k * per : (k + 1) * per]:
            fleet.enter(c)

    wall, used = timed(n, lambda: gevent.joinall([gevent.spawn(burst, k) for k in range(STORM_GREENLETS)]))
    stats = script_stats(r)
    calls = int(stats.get("calls", 0)) or 1
    print(
        f"{STORM_GREENLETS} at once: {wall:.0f} us wall, {used:.0f} us CPU per admission;"
        f" {calls} script calls ({n / calls:.0f} admissions each), {stats.get('usec_per_call')} us each in Redis"
    )
    for fleet in fleets:
        fleet.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_admission", description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while True:
                try:
                    connect(url).ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            measure(url, args.n, args.workers)
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
