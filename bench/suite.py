"""Run scenarios x servers x rounds, each scenario on a fresh server."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from bench import servers
from bench.auth import BenchAuth
from bench.loadgen import LoadgenError
from bench.measure import measure
from bench.scenarios import Scenario

Launcher = Callable[[int], AbstractContextManager[servers.Target]]


def launchers(app_dir: Path) -> dict[str, Launcher]:
    """Every known server, keyed by target name; the int is stream capacity.

    Each Jobstream target also has a ``-ws`` twin: the same server, its
    streams WebSockets on /ws.
    """
    out: dict[str, Launcher] = {}
    for t in ("sse", "ws"):
        out.update(_jobstreams(app_dir, t))
    out["sse-starlette"] = lambda cap: servers.starlette()
    out["nchan"] = lambda cap: servers.nchan()
    out["floor"] = servers.floor
    out["ceiling"] = lambda cap: servers.floor(cap, ceiling=True)
    return out


def _jobstreams(app_dir: Path, transport: str) -> dict[str, Launcher]:
    suffix = "-ws" if transport == "ws" else ""

    def plain(cap: int) -> AbstractContextManager[servers.Target]:
        return servers.jobstream(app_dir, cap, transport=transport)

    def redis(cap: int) -> AbstractContextManager[servers.Target]:
        return servers.jobstream(app_dir, cap, redis_url=True, transport=transport)

    def fleet(cap: int) -> AbstractContextManager[servers.Target]:
        return servers.jobstream(app_dir, cap, redis_url=True, fleet=True, transport=transport)

    def two(cap: int) -> AbstractContextManager[servers.Target]:
        return servers.jobstream(app_dir, cap, workers=2, transport=transport)

    def auth(cap: int) -> AbstractContextManager[servers.Target]:
        return servers.jobstream(app_dir, cap, auth=BenchAuth.random(), transport=transport)

    return {
        "jobstream" + suffix: plain,
        "jobstream-redis" + suffix: redis,
        "jobstream-redis-fleet" + suffix: fleet,
        "jobstream-2w" + suffix: two,
        "jobstream-auth" + suffix: auth,
    }


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_one(launch: Launcher, target_name: str, sc: Scenario, rnd: int) -> dict[str, Any]:
    """One record: a fresh server, one scenario, condensed metrics or an error."""
    rec: dict[str, Any] = {
        "round": rnd,
        "target": target_name,
        "scenario": sc.name,
        "n": sc.load.n,
        "rate": sc.load.rate,
        "duration": sc.load.duration,
        "loadavg_1m": os.getloadavg()[0],  # other work on the same 2 cores
    }
    t0 = time.monotonic()
    try:
        with launch(sc.capacity) as target:
            rec["metrics"] = measure(target, sc)
    except (servers.ServerError, LoadgenError, OSError, ValueError, KeyError) as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    rec["seconds"] = round(time.monotonic() - t0, 1)
    return rec


def rounds(
    targets: list[str],
    scenarios: list[Scenario],
    n_rounds: int,
    app_dir: Path,
    out: IO[str],
) -> Iterator[dict[str, Any]]:
    """Yield records; each is also written to out as one JSON line."""
    known = launchers(app_dir)
    dead: set[str] = set()  # targets that failed to start: skip the rest
    for rnd in range(1, n_rounds + 1):
        for sc in scenarios:
            for name in targets:
                if name in dead or (sc.only and name not in sc.only):
                    continue
                log(f"round {rnd} {sc.name} on {name} ...")
                rec = run_one(known[name], name, sc, rnd)
                if "error" in rec:
                    log(f"  {name}: {rec['error'].splitlines()[0]}")
                    if "not ready" in rec["error"] or "not installed" in rec["error"] or "no app.py" in rec["error"]:
                        dead.add(name)
                else:
                    m = rec["metrics"]
                    log(
                        f"  done in {rec['seconds']} s: "
                        + ", ".join(
                            f"{k}={m[k]:.4g}"
                            for k in (
                                "connect_rate",
                                "rss_per_stream",
                                "p99_ms",
                                "deliveries_per_s",
                                "lost",
                            )
                            if isinstance(m.get(k), (int, float))
                        )
                    )
                out.write(json.dumps(rec, default=str) + "\n")
                out.flush()
                yield rec
