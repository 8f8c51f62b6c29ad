"""Scenario definitions: what load each benchmark puts on a server."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.loadgen import Load


@dataclass(frozen=True)
class Scenario:
    """A named load; kind selects how it is measured (see measure.py)."""

    name: str
    kind: str  # connect | deliver | overload | storm
    load: Load
    only: tuple[str, ...] = ()  # run on these targets only (empty: all)
    exact_limit: bool = False  # STREAM_MAX_CONNECTIONS = the streams, no headroom

    @property
    def capacity(self) -> int:
        """STREAM_MAX_CONNECTIONS for the server: never the limiting factor,
        unless the scenario is about the limit."""
        if self.exact_limit:
            return self.load.n
        return self.load.n + self.load.n // 10 + 100


def _fanout(n: int, rate: float, dur: float) -> Scenario:
    return Scenario(
        f"fanout-{n}x{rate:g}",
        "deliver",
        Load(n=n, rate=rate, duration=dur, health_rate=5),
    )


def full() -> list[Scenario]:
    """The default suite (about 2-3 minutes per server on 2 cores)."""
    return [
        Scenario("connect", "connect", Load(n=10_000, wait_stdin=True, connect_conc=256)),
        _fanout(1000, 10, 5),
        _fanout(1000, 100, 5),
        _fanout(5000, 10, 5),
        _fanout(5000, 100, 5),
        Scenario("throughput-100", "deliver", Load(n=100, duration=10, pub_conns=8)),
        Scenario("throughput-1000", "deliver", Load(n=1000, duration=10, pub_conns=8)),
        Scenario(
            "health-under-load",
            "deliver",
            Load(n=1000, rate=100, duration=10, health_rate=50),
        ),
        Scenario(
            "slow-clients-base",
            "deliver",
            Load(n=1000, rate=100, duration=8, pad=512, health_rate=5),
        ),
        Scenario(
            "slow-clients",
            "deliver",
            Load(n=1000, rate=100, duration=8, pad=512, never_read_pct=5, health_rate=5),
        ),
        Scenario(
            "overload",
            "overload",
            Load(
                n=1000,
                rate=100,
                duration=8,
                pad=1024,
                stall_pct=5,
                stall_at=1,
                stall_for=6,
                drain=30,
                health_rate=5,
            ),
        ),
        # Every stream of two workers reconnects after a reload (bench/storm.py).
        Scenario(
            "storm-2w",
            "storm",
            Load(n=10_000, rate=10, duration=3, wait_stdin=True, honor_retry=True, drain=10),
            only=("jobstream-2w",),
            exact_limit=True,
        ),
    ]


def quick() -> list[Scenario]:
    """A smaller, shorter suite (about a minute per server)."""
    out = []
    for sc in full():
        if sc.name.startswith("fanout-5000"):
            continue
        load = sc.load
        if sc.kind in ("connect", "storm"):
            load = replace(load, n=2000)
        else:
            load = replace(
                load,
                duration=min(load.duration, 3),
                drain=min(load.drain, 15),
                stall_for=min(load.stall_for, 2),
            )
        out.append(replace(sc, load=load))
    return out


def smoke(n: int = 20) -> list[Scenario]:
    """Tiny: for tests/integration/test_bench_smoke.py."""
    return [
        Scenario("connect", "connect", Load(n=n, wait_stdin=True)),
        Scenario(
            f"fanout-{n}x20",
            "deliver",
            Load(n=n, rate=20, duration=1, drain=3, health_rate=5),
        ),
    ]


SETS = {"full": full, "quick": quick, "smoke": smoke}
