"""The reconnect storm: every stream of a multi-worker instance reconnects at once.

Opens ``load.n`` streams, then reloads gunicorn (SIGHUP to the master: new
workers start, the old ones get SIGTERM). Each old stream gets its farewell,
a ``retry:`` drawn from [``STREAM_RETRY_MS``, ``STREAM_RECONNECT_JITTER_MS``],
and the load generator waits that long (``-honor-retry``, as EventSource
does) before reconnecting with its ``Last-Event-ID``. The server runs with
``STREAM_MAX_CONNECTIONS`` equal to the streams, so the instance limit is held
exactly only if every stream gets back in and none is counted twice. Then it
publishes (``load.rate`` for ``load.duration``) to measure deliveries.

Per new worker: CPU µs per reconnect (from its CPU when it logged
``worker_started``, its boot done, to the moment all are back) and per delivery (its CPU
while publishing and draining, over the deliveries to its streams).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from bench import loadgen
from bench.procs import _children, http_json
from bench.scenarios import Scenario
from bench.servers import Target

# Before this many seconds after the reload no retry: has elapsed (the
# default STREAM_RETRY_MS is 3000): a new worker's CPU here is its boot.
QUIET_SECONDS = 2.8
STORM_TIMEOUT = 240.0  # then the round reports storm_timed_out = 1


def _cpu(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSampler:
    """Every 0.1 s: (time, {pid: CPU seconds}) of the master's children."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.samples: list[tuple[float, dict[int, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.time(), {pid: _cpu(pid) for pid in _children(self.master)}))

    def at(self, when: float) -> dict[int, float]:
        """The last sample taken at or before ``when``."""
        best: dict[int, float] = {}
        for t, cpu in self.samples:
            if t > when:
                break
            best = cpu
        return best

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _streams_by_worker(target: Target, tries: int = 12) -> dict[int, int]:
    """Open streams per worker pid, from /admin/clients on fresh connections."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        req = urllib.request.Request(target.base_url + "/admin/clients", headers={"Connection": "close"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            body = json.loads(resp.read())
        seen[int(body["worker_pid"])] = int(body["count"])
    return seen


class _WorkerStarts:
    """Pids of the ``worker_started`` lines the server log gained since creation."""

    def __init__(self, target: Target) -> None:
        self.path = target.log
        self.offset = self.path.stat().st_size if self.path is not None else 0

    def new_pids(self) -> set[int]:
        if self.path is None:
            return set()
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk.rfind(b"\n") + 1
        self.offset += complete
        pids = set()
        for line in chunk[:complete].splitlines():
            if b"worker_started" in line:
                try:
                    pids.add(int(json.loads(line)["pid"]))
                except (ValueError, KeyError):
                    continue
        return pids


def _active(target: Target) -> int:
    stream = http_json(target.base_url + "/health", timeout=5).get("stream")
    return int(stream.get("active_connections", -1)) if isinstance(stream, dict) else -1


def _reload_and_wait(target: Target, n: int, stream: str, sampler: CpuSampler) -> dict[str, Any]:
    """SIGHUP the master, wait until ``n`` streams are back on the new workers."""
    old = set(_children(target.pid))
    active_before = _active(target)
    t_hup = time.time()
    os.kill(target.pid, signal.SIGHUP)
    max_active, deadline = 0, t_hup + STORM_TIMEOUT
    booted: dict[int, tuple[float, float, int]] = {}  # pid -> (seconds after SIGHUP, CPU, streams open)
    log = _WorkerStarts(target)
    active = 0
    while time.time() < deadline:
        time.sleep(0.1)
        for pid in log.new_pids() - booted.keys():
            booted[pid] = (time.time() - t_hup, _cpu(pid), active)
        try:
            active = _active(target)
        except OSError:
            continue  # between workers
        max_active = max(max_active, active)
        if active == n and not (old & set(_children(target.pid))):
            break
    t_all = time.time()
    new = sorted(set(_children(target.pid)) - old)
    quiet, done = sampler.at(t_hup + QUIET_SECONDS), sampler.at(t_all)
    counts = _streams_by_worker(target)
    # From the moment a worker logged worker_started (its boot done), over the
    # streams it took after that (those open then are split evenly).
    start = {pid: booted.get(pid, (QUIET_SECONDS, quiet.get(pid, 0.0), 0)) for pid in new}
    return {
        "active_before": active_before,
        "storm_seconds": t_all - t_hup,
        "max_active": max_active,
        "active_after": _active(target),
        "workers": new,
        "streams_by_worker": counts,
        "boot_done_s": {pid: start[pid][0] for pid in new},
        "connect_cpu_us": {
            pid: 1e6
            * (done.get(pid, 0.0) - start[pid][1])
            / max(counts.get(pid, 0) - start[pid][2] / max(len(new), 1), 1)
            for pid in new
        },
        "extra_stream_status": _probe(target, stream),
        "t_go": time.time(),
    }


def measure_storm(target: Target, sc: Scenario) -> dict[str, Any]:
    load = sc.load
    topic = "bench" + secrets.token_hex(4)
    stream = target.stream_path.replace("{topic}", topic)
    publish = target.publish_path.replace("{topic}", topic)
    sampler = CpuSampler(target.pid)
    info: dict[str, Any] = {}

    def connected(_: dict[str, Any]) -> None:
        info.update(_reload_and_wait(target, load.n, stream, sampler))

    sampler.start()
    try:
        raw = loadgen.run(target.base_url, stream, publish, target.style, load, topic=topic, on_connected=connected)
    finally:
        sampler.stop()
    end = info["t_go"] + raw["publish_seconds"] + raw["drain_seconds"]
    go, drained = sampler.at(info["t_go"]), sampler.at(end)
    counts = info["streams_by_worker"]
    published = raw["published"]
    info["delivery_cpu_us"] = {
        pid: 1e6 * (drained.get(pid, 0.0) - go.get(pid, 0.0)) / max(counts.get(pid, 0) * published, 1)
        for pid in info["workers"]
    }
    fails = raw.get("reconnect_failures_by_kind") or {}
    connect_us = list(info["connect_cpu_us"].values()) or [0.0]
    delivery_us = list(info["delivery_cpu_us"].values()) or [0.0]
    return {
        "connect_cpu_us_mean": sum(connect_us) / len(connect_us),
        "connect_cpu_us_max": max(connect_us),
        "delivery_cpu_us_mean": sum(delivery_us) / len(delivery_us),
        "delivery_cpu_us_max": max(delivery_us),
        "connected": raw["connected"],
        "connect_failures": sum((raw.get("connect_failures") or {}).values()),
        "reconnects": raw["reconnects"],
        "stream_ends": raw["stream_ends"],
        "reconnect_failures": raw["reconnect_failures"],
        "reconnect_failures_by_kind": fails,
        "reconnect_5xx": sum(v for k, v in fails.items() if k.startswith("status_5")),
        "storm_seconds": info["storm_seconds"],
        "storm_timed_out": int(info["storm_seconds"] >= STORM_TIMEOUT),
        "last_reconnect_s": raw["last_reconnect_unix"] - (info["t_go"] - info["storm_seconds"]),
        "max_active": info["max_active"],
        "active_after": info["active_after"],
        "limit": sc.capacity,
        "extra_stream_status": info["extra_stream_status"],
        "connect_cpu_us_by_worker": info["connect_cpu_us"],
        "boot_done_s_by_worker": info["boot_done_s"],
        "delivery_cpu_us_by_worker": info["delivery_cpu_us"],
        "streams_by_worker": counts,
        "deliveries_per_s": raw["deliveries_per_s"],
        "lost": raw["lost"],
        "duplicates": raw["duplicates"],
        "p99_ms": raw["latency_ms"]["p99"],
        "raw": raw,
    }


def _probe(target: Target, stream: str) -> int:
    """The status of one stream more than the limit (200 only in retry mode)."""
    req = urllib.request.Request(target.base_url + stream, headers={"Accept": "text/event-stream"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
