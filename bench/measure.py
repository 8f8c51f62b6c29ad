"""Run one scenario against one running server and condense its figures."""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

from bench import loadgen
from bench.loadgen import Load
from bench.procs import cpu_seconds, http_json, rss_bytes
from bench.scenarios import Scenario
from bench.servers import Target
from bench.storm import measure_storm


class RssSampler:
    """Samples the server tree's RSS every 0.25 s in a thread; keeps the max."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self.max = max(self.max, rss_bytes(self.pid))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def _drive(target: Target, load: Load) -> dict[str, Any]:
    """One loadgen run with server CPU/RSS bookkeeping around it."""
    topic = "bench" + secrets.token_hex(4)
    stream = target.stream_path.replace("{topic}", topic)
    publish = target.publish_path.replace("{topic}", topic)
    at_connect: dict[str, Any] = {}

    def connected(info: dict[str, Any]) -> None:
        at_connect["rss"] = rss_bytes(target.pid)
        if target.name.startswith("jobstream"):
            try:
                stream_info = http_json(target.base_url + target.health_path).get("stream")
                if isinstance(stream_info, dict):
                    at_connect["active"] = stream_info.get("active_connections")
            except OSError as exc:
                at_connect["health_error"] = str(exc)

    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as tmp:
        # Minted before the clock starts: the bench's cost, not the server's.
        tokens = target.auth.write_tokens(Path(tmp), load.n) if target.auth is not None else None
        rss0, cpu0, t0 = rss_bytes(target.pid), cpu_seconds(target.pid), time.monotonic()
        with RssSampler(target.pid) as sampler:
            raw = loadgen.run(
                target.base_url,
                stream,
                publish,
                target.style,
                load,
                health=target.health_path,
                topic=topic,
                on_connected=connected,
                tokens=tokens,
                transport=target.transport,
            )
    wall = time.monotonic() - t0
    server_cpu = cpu_seconds(target.pid) - cpu0
    raw.update(
        rss_before=rss0,
        rss_connected=at_connect.get("rss", 0),
        rss_max=sampler.max,
        server_cpu_s=server_cpu,
        wall_s=wall,
        active_at_connect=at_connect.get("active"),
    )
    return raw


def _common(raw: dict[str, Any]) -> dict[str, Any]:
    wall = max(raw["wall_s"], 1e-9)
    fails = raw.get("connect_failures") or {}
    return {
        "connected": raw["connected"],
        "connect_failures": sum(fails.values()),
        "failures_by_kind": fails,
        "server_cpu_pct": 100 * raw["server_cpu_s"] / wall,
        "loadgen_cpu_pct": 100 * raw["loadgen_cpu_s"] / wall,
    }


def _delivery(raw: dict[str, Any]) -> dict[str, Any]:
    lat, pub, health = raw["latency_ms"], raw["publish_ms"], raw["health_ms"]
    return {
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "deliveries_per_s": raw["deliveries_per_s"],
        "lost": raw["lost"],
        "duplicates": raw["duplicates"],
        "out_of_order": raw["out_of_order"],
        "published": raw["published"],
        "publish_per_s": raw["publish_rate"],
        "publish_errors": sum((raw.get("publish_errors") or {}).values()),
        "publish_p99_ms": pub["p99"],
        "health_p99_ms": health["p99"],
        "health_max_ms": health["max"],
        "health_errors": raw["health_errors"],
        "stream_ends": raw["stream_ends"],
        "reconnects": raw["reconnects"],
        "reset_events": raw.get("reset_events", 0),
    }


def measure(target: Target, sc: Scenario) -> dict[str, Any]:
    """Run scenario sc against target; returns condensed metrics + raw output."""
    if sc.kind == "connect":
        raw = _drive(target, sc.load)
        streams = max(raw["connected"], 1)
        growth = raw["rss_connected"] - raw["rss_before"]
        return {
            **_common(raw),
            "connect_rate": raw["connect_rate"],
            "connect_p99_ms": raw["connect_ms"]["p99"],
            "rss_per_stream": growth / streams,
            "rss_connected_mb": raw["rss_connected"] / 2**20,
            "server_active": raw["active_at_connect"],
            "raw": raw,
        }
    if sc.kind == "deliver":
        raw = _drive(target, sc.load)
        return {**_common(raw), **_delivery(raw), "raw": raw}
    if sc.kind == "overload":
        raw = _drive(target, sc.load)
        return {
            **_common(raw),
            **_delivery(raw),
            "raw": raw,
            "lost_all": raw["lost"] + raw["lost_stallers"],
            "clients_missing": raw["clients_missing"],
            "reconnects": raw["reconnects"],
            "stall_p99_ms": raw["stall_latency_ms"]["p99"],
            "rss_growth_mb": (raw["rss_max"] - raw["rss_before"]) / 2**20,
        }
    if sc.kind == "storm":
        return measure_storm(target, sc)
    raise ValueError(f"unknown scenario kind {sc.kind!r}")
