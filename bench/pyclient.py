"""Python asyncio (uvloop) SSE client, only to compare load-generator ceilings.

The suite drives servers with the Go load generator; this module measures
how many deliveries/s a Python client spread over processes can consume, on
the same throughput scenario, so docs/benchmarks.md can justify the choice.
Run: python -m bench.pyclient --procs 2 --n 1000 --seconds 5   (against nchan)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time
from typing import Any

from bench import servers
from bench.procs import raise_nofile


async def _subscriber(port: int, path: str, counts: list[int], lat: list[float], stop: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    chunked = b"chunked" in head.lower()
    buf = b""
    while not stop.is_set():
        if chunked:
            size = int((await reader.readline()).strip() or b"0", 16)
            data = await reader.readexactly(size + 2)
            buf += data[:-2]
        else:
            buf += await reader.read(65536)
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                d = json.loads(line[5:])
                counts[0] += 1
                if counts[0] % 50 == 0:  # sample latency: parsing every event costs too much
                    lat.append(time.time() - d["t"])
    writer.close()


def _proc(port: int, path: str, n: int, seconds: float, ready: Any, out: Any) -> None:
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError as exc:
        print(f"uvloop unavailable ({exc}); using asyncio's default loop")

    async def main() -> None:
        counts: list[int] = [0]
        lat: list[float] = []
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_subscriber(port, path, counts, lat, stop)) for _ in range(n)]
        await asyncio.sleep(1.0)
        ready.put(1)
        t0, c0 = time.monotonic(), counts[0]
        await asyncio.sleep(seconds)
        out.put(
            {
                "deliveries": counts[0] - c0,
                "seconds": time.monotonic() - t0,
                "lat": sorted(lat),
            }
        )
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


async def _publisher(port: int, path: str, seconds: float, conns: int, rate: float) -> int:
    sent = 0

    async def one() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        deadline = start + seconds
        k = 0
        while time.monotonic() < deadline:
            if rate > 0:  # each of the conns publishes rate/conns per second
                k += 1
                await asyncio.sleep(max(0.0, start + k * conns / rate - time.monotonic()))
            body = json.dumps({"seq": sent, "t": time.time()}).encode()
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")),
                0,
            )
            await reader.readexactly(length)
            sent += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(conns)))
    return sent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rate", type=float, default=0, help="events/s (0 = as fast as accepted)")
    a = p.parse_args()
    raise_nofile()
    with servers.nchan() as target:
        ready: mp.Queue[int] = mp.Queue()
        out: mp.Queue[dict[str, Any]] = mp.Queue()
        per = a.n // a.procs
        procs = [
            mp.Process(target=_proc, args=(target.port, "/sub/py", per, a.seconds, ready, out)) for _ in range(a.procs)
        ]
        for pr in procs:
            pr.start()
        for _ in procs:
            ready.get(timeout=60)
        sent = asyncio.run(_publisher(target.port, "/pub/py", a.seconds, 8, a.rate))
        res = [out.get(timeout=60) for _ in procs]
        for pr in procs:
            pr.join(10)
    lat = sorted(x for r in res for x in r["lat"])
    total = sum(r["deliveries"] for r in res)
    secs = max(r["seconds"] for r in res)
    p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")
    print(
        json.dumps(
            {
                "client": "python-asyncio",
                "procs": a.procs,
                "n": a.n,
                "published": sent,
                "rate": a.rate,
                "deliveries_per_s": total / secs,
                "p99_ms_sampled": p99,
            }
        )
    )


if __name__ == "__main__":
    main()
