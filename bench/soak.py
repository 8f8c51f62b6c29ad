"""The soak: open streams plus connect/disconnect churn for minutes; is RSS flat?

python -m bench.soak --seconds 600 --streams 1000 --churn 200 --out soak.json

One gunicorn worker (no Redis). `--streams` long-lived streams stay open (one
that ends is reopened with Last-Event-ID); `--churn` times a second a new
stream opens, reads its opening, stays 0-1 s and leaves, half of them with a
FIN and half with an RST (at most one second's worth in flight: a cycle
that would exceed it is skipped and counted, so a starved client or server
does not inflate the number of open streams); `--publish-rate` events a second reach every stream.
Every `--sample` seconds the worker's RSS, /health's active count and the
client's counters are sampled. Verdict: after `--warmup` seconds the RSS
samples stay within `--tolerance` (10 %) of the first one after warm-up.
A benchmark, not a CI test: the client is Python (asyncio, uvloop when
installed) and shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import servers
from bench.procs import http_json, raise_nofile, rss_bytes, tree

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "soak"


@dataclass
class Counters:
    """What the client saw; read by the sampler."""

    long_opened: int = 0
    long_ended: int = 0
    long_events: int = 0
    churn_started: int = 0
    churn_ok: int = 0
    churn_failed: int = 0
    churn_refused: int = 0
    churn_skipped: int = 0
    published: int = 0
    publish_failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


def _request(path: str, last_id: str | None = None) -> bytes:
    extra = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()


async def _long_stream(port: int, c: Counters, stop: asyncio.Event) -> None:
    """One long-lived stream; reopened with Last-Event-ID whenever it ends."""
    last_id: str | None = None
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError) as exc:
            c.error(exc)
            await asyncio.sleep(1)
            continue
        try:
            writer.write(_request(f"/stream?topic={TOPIC}", last_id))
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            c.long_opened += 1
            buf = b""
            while not stop.is_set():
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.startswith(b"id:"):
                        last_id = line[3:].strip().decode()
                        c.long_events += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            c.error(exc)
        finally:
            writer.close()
        if not stop.is_set():
            c.long_ended += 1
            await asyncio.sleep(0.5)


async def _churn_one(port: int, c: Counters) -> None:
    """Open a stream, read its opening, stay up to 1 s, leave by FIN or RST."""
    c.churn_started += 1
    writer: asyncio.StreamWriter | None = None
    try:
        reader, opened = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        writer = opened
        opened.write(_request(f"/stream?topic={TOPIC}"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 200"):
            c.churn_refused += 1
            return
        await asyncio.wait_for(reader.readuntil(b": connected"), 10)
        await asyncio.sleep(random.random())
        c.churn_ok += 1
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        c.churn_failed += 1
        c.error(exc)
    finally:
        if writer is not None:
            sock = writer.get_extra_info("socket")
            if sock is not None and random.random() < 0.5:
                # SO_LINGER 0: close() sends an RST instead of a FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()


async def _churn(port: int, rate: float, c: Counters, stop: asyncio.Event) -> None:
    tasks: set[asyncio.Task[None]] = set()
    # A cycle lasts ~0.5 s, so about rate/2 are in flight; at most one
    # second's worth, so a starved machine does not inflate the open count.
    max_in_flight = max(1, int(rate))
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        n += 1
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= max_in_flight:
            c.churn_skipped += 1  # the client (or the server) fell behind: do not pile up
            continue
        task = asyncio.create_task(_churn_one(port, c))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)


async def _publisher(port: int, rate: float, c: Counters, stop: asyncio.Event) -> None:
    """POST /events at rate on one keep-alive connection."""
    if rate <= 0:
        return
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        n += 1
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        body = json.dumps({"topic": TOPIC, "event": "tick", "data": {"n": n, "t": time.time()}}).encode()
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 202"):
                c.published += 1
            else:
                c.publish_failed += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            c.publish_failed += 1
            c.error(exc)
            if writer is not None:
                writer.close()
            reader = writer = None


def _worker_pid(master: int) -> int:
    pids = tree(master)
    return pids[1] if len(pids) > 1 else master


async def _run(args: argparse.Namespace, port: int, master: int) -> dict[str, Any]:
    c = Counters()
    stop = asyncio.Event()
    t0 = time.monotonic()
    long_tasks = []
    for i in range(args.streams):
        long_tasks.append(asyncio.create_task(_long_stream(port, c, stop)))
        if i % 100 == 99:
            await asyncio.sleep(0.2)  # no connect storm at start
    while c.long_opened < args.streams and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.2)
    opened_s = time.monotonic() - t0
    others = [
        asyncio.create_task(_churn(port, args.churn, c, stop)),
        asyncio.create_task(_publisher(port, args.publish_rate, c, stop)),
    ]
    samples: list[dict[str, Any]] = []
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        worker = _worker_pid(master)
        try:
            health = http_json(f"http://127.0.0.1:{port}/health", timeout=5)
            stream_info = health.get("stream")
            active = stream_info.get("active_connections") if isinstance(stream_info, dict) else None
        except OSError as exc:
            active = None
            c.error(exc)
        sample = {
            "t": round(elapsed, 1),
            "worker_pid": worker,
            "worker_rss": rss_bytes(worker) if worker != master else 0,
            "tree_rss": rss_bytes(master),
            "active": active,
            **{k: v for k, v in asdict(c).items() if k != "errors"},
        }
        samples.append(sample)
        print(json.dumps(sample), flush=True)
        if elapsed >= args.seconds:
            break
        await asyncio.sleep(max(0.0, start + len(samples) * args.sample - time.monotonic()))
    stop.set()
    for task in [*long_tasks, *others]:
        task.cancel()
    await asyncio.gather(*long_tasks, *others, return_exceptions=True)
    return {"opened_s": opened_s, "samples": samples, "counters": asdict(c)}


def verdict(samples: list[dict[str, Any]], warmup: float, tolerance: float) -> dict[str, Any]:
    """RSS after warm-up, relative to its first sample after warm-up."""
    after = [s for s in samples if s["t"] >= warmup]
    if not after:
        return {"flat": False, "why": "no sample after warm-up"}
    pids = {s["worker_pid"] for s in after}
    base = after[0]["worker_rss"]
    rss = [s["worker_rss"] for s in after]
    drift = (max(rss) - base) / base if base else float("inf")
    spread = (max(rss) - min(rss)) / base if base else float("inf")
    return {
        "flat": drift <= tolerance and spread <= tolerance and len(pids) == 1,
        "same_worker": len(pids) == 1,
        "base_mb": base / 2**20,
        "min_mb": min(rss) / 2**20,
        "max_mb": max(rss) / 2**20,
        "last_mb": rss[-1] / 2**20,
        "max_drift_pct": 100 * drift,
        "spread_pct": 100 * spread,
        "samples_after_warmup": len(after),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--churn", type=float, default=200, help="connect/disconnect cycles a second")
    p.add_argument("--publish-rate", type=float, default=2, help="events a second to every stream")
    p.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    p.add_argument("--warmup", type=float, default=60, help="seconds before the flatness check starts")
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--app-dir", type=Path, default=ROOT)
    p.add_argument("--out", type=Path, default=None, help="JSON result file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass  # asyncio's own loop: slower client, same server
    # Room for the long streams, the churn in flight (up to 1 s each) and reopenings.
    capacity = args.streams + int(args.churn * 2) + 200
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with servers.jobstream(args.app_dir, capacity, workers=1) as target:
        result = asyncio.run(_run(args, target.port, target.pid))
    result["verdict"] = verdict(result["samples"], args.warmup, args.tolerance)
    result["meta"] = {"argv": sys.argv, "started": started, "capacity": capacity, **vars(args)}
    text = json.dumps(result, default=str, indent=1)
    if args.out is not None:
        args.out.write_text(text)
    print(json.dumps({"verdict": result["verdict"], "counters": result["counters"]}, indent=1))
    return 0 if result["verdict"]["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
