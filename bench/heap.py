"""Where a stream's bytes go: tracemalloc in the worker at 0 and N open streams.

    python -m bench.heap --n 10000 [--app-dir DIR] [--keep DIR] [--sites 40]
    python -m bench.heap --analyze DIR --n 10000

Starts one Jobstream worker with ``bench/heapconf.py`` (the app's gunicorn
config plus tracemalloc and a dump on SIGUSR2), dumps the heap after 1 s
idle, opens N streams with the load generator, dumps again, and prints the
traced bytes per stream by owner (the innermost frame that names one), the
worker's RSS growth per stream, and what tracemalloc does not see (RSS
growth minus traced growth minus tracemalloc's own growth: greenlet
frame stacks from mmap, allocator slack).
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import signal
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import loadgen, servers
from bench.loadgen import Load
from bench.procs import http_json, raise_nofile, rss_bytes, tree

ROOT = Path(__file__).resolve().parent.parent
CONF = Path(__file__).resolve().parent / "heapconf.py"

STACK = "greenlet C stack, saved at the wait"
# (owner, file substring, line substring or ""): the first rule matching a
# frame, innermost frame first, names the owner of an allocation.
RULES: list[tuple[str, str, str]] = [
    ("greenlet stack copies (C, no Python frame)", "<unknown>", ""),
    # A parked stream's greenlet saves its C stack where it switches away:
    # in the buffer's wait (allocated by greenlet, under the waiting line).
    (STACK, "streaming/core/buffer.py", "waiter.get()"),
    (STACK, "streaming/transport/stream.py", "get()]"),  # before bench/heap.py: gevent's Queue.get
    ("per-stream buffer (queue)", "streaming/core/client.py", "Queue("),
    ("per-stream buffer (queue)", "streaming/core/buffer.py", ""),
    ("per-stream buffer (queue)", "/queue.py", ""),
    ("per-stream buffer (queue)", "/threading.py", ""),
    ("Client", "streaming/core/client.py", ""),
    ("StreamWriter", "streaming/core/writer.py", ""),
    ("TopicFilter", "streaming/core/topics.py", ""),
    ("registry", "streaming/core/registry.py", ""),
    ("hang-up watcher", "streaming/transport/hangup.py", ""),
    ("generator (stream.py) and its opening", "streaming/transport/stream.py", ""),
    ("generator (stream.py) and its opening", "streaming/core/events.py", ""),
    ("connect: client fields, log, metrics", "streaming/transport/connect.py", ""),
    ("connect: client fields, log, metrics", "streaming/transport/fastpath.py", ""),
    ("connect: client fields, log, metrics", "streaming/ops/", ""),
    ("connect: client fields, log, metrics", "server/", ""),
    ("connect: client fields, log, metrics", "/logging/", ""),
    ("gunicorn request, environ, response", "gunicorn/http/", ""),
    ("gunicorn handler (worker)", "gunicorn/workers/", ""),
    ("greenlet, pool, server", "gevent/pool.py", ""),
    ("greenlet, pool, server", "gevent/greenlet.py", ""),
    ("greenlet, pool, server", "gevent/baseserver.py", ""),
    ("greenlet, pool, server", "gevent/server.py", ""),
    ("gevent sockets", "gevent/_socket", ""),
    ("gevent sockets", "/socket.py", ""),
    ("gevent hub and loop", "gevent/", ""),
]
IGNORED = ("tracemalloc.py", "heapconf.py", "<frozen importlib", "linecache.py")


def owner(tb: tracemalloc.Traceback) -> str:
    for frame in reversed(tb):  # innermost first
        for name, file, text in RULES:
            if file in frame.filename and (not text or text in linecache.getline(frame.filename, frame.lineno)):
                return name
    return "other: " + (tb[-1].filename.rsplit("site-packages/", 1)[-1] if len(tb) else "?")


def analyze(directory: Path, n: int | None, sites: int) -> str:
    """The table of two dumps; n (streams) defaults to how many StreamWriters were added."""
    first, last = sorted(directory.glob("snap-*.pickle"))[:2]
    figures = [json.loads(p.with_suffix(".json").read_text()) for p in (first, last)]
    if n is None:
        n = figures[1]["types"].get("StreamWriter", 0) - figures[0]["types"].get("StreamWriter", 0)
    n = max(1, n)
    drop = [tracemalloc.Filter(False, f"*{name}*") for name in IGNORED]
    s0 = tracemalloc.Snapshot.load(str(first)).filter_traces(drop)
    s1 = tracemalloc.Snapshot.load(str(last)).filter_traces(drop)
    by_owner: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for stat in s1.compare_to(s0, "traceback"):
        name = owner(stat.traceback)
        by_owner[name][0] += stat.size_diff
        by_owner[name][1] += stat.count_diff
        inner = stat.traceback[-1]
        site = f"{inner.filename.rsplit('site-packages/', 1)[-1].replace(str(ROOT) + '/', '')}:{inner.lineno}"
        by_site[f"{site} [{name}]"][0] += stat.size_diff
        by_site[f"{site} [{name}]"][1] += stat.count_diff
    traced = sum(v[0] for v in by_owner.values())
    rss = figures[1]["rss"] - figures[0]["rss"]
    overhead = figures[1]["tracemalloc_overhead"] - figures[0]["tracemalloc_overhead"]
    lines = [
        f"{n} streams; worker RSS growth {rss / n:,.0f} B/stream, of which tracemalloc's own "
        f"{overhead / n:,.0f}; traced {traced / n:,.0f}; not traced {(rss - overhead - traced) / n:,.0f}",
        "",
        "| owner | bytes/stream | blocks/stream |",
        "|---|---|---|",
    ]
    for name, (size, count) in sorted(by_owner.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {name} | {size / n:,.0f} | {count / n:.2f} |")
    lines += ["", "| site (innermost frame) [owner] | bytes/stream | blocks/stream |", "|---|---|---|"]
    for site, (size, count) in sorted(by_site.items(), key=lambda kv: -abs(kv[1][0]))[:sites]:
        lines.append(f"| {site} | {size / n:,.1f} | {count / n:.2f} |")
    t0, t1 = figures[0]["types"], figures[1]["types"]
    grown = sorted(((t1.get(k, 0) - t0.get(k, 0), k) for k in t1), reverse=True)[:25]
    lines += ["", "gc-tracked objects per stream: " + ", ".join(f"{k} {d / n:.2f}" for d, k in grown if d >= n // 2)]
    return "\n".join(lines)


def _dump(worker: int, directory: Path, k: int, timeout: float = 300) -> None:
    os.kill(worker, signal.SIGUSR2)
    done = directory / f"snap-{k}.json"
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no heap dump {done} from worker {worker}")
        time.sleep(0.2)


def measure(app_dir: Path, n: int, directory: Path) -> dict[str, Any]:
    raise_nofile()
    loadgen.build()
    env = {"JOBSTREAM_HEAP_DIR": str(directory)}
    with servers.jobstream(app_dir, n + n // 10 + 100, config=CONF, env_extra=env) as target:
        workers = [p for p in tree(target.pid) if p != target.pid]
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker, found {workers}")
        time.sleep(1.0)  # the idle baseline
        rss0 = rss_bytes(target.pid)
        _dump(workers[0], directory, 1)
        seen: dict[str, int] = {}

        def connected(info: dict[str, Any]) -> None:
            seen["rss"] = rss_bytes(target.pid)
            # The server's count: a connect the load generator gave up on may be open there.
            health = http_json(target.base_url + "/health").get("stream")
            seen["connected"] = int(health["active_connections"]) if isinstance(health, dict) else n
            _dump(workers[0], directory, 2)

        stream = target.stream_path.replace("{topic}", "benchheap")
        loadgen.run(
            target.base_url,
            stream,
            target.publish_path,
            target.style,
            Load(n=n, wait_stdin=True, connect_conc=256),
            topic="benchheap",
            on_connected=connected,
        )
    return {"rss_tree_per_stream": (seen["rss"] - rss0) / max(1, seen.get("connected", n)), **seen}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.heap", description=__doc__)
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="streams to open (with --analyze: streams open, default: StreamWriters added)",
    )
    p.add_argument("--app-dir", type=Path, default=ROOT)
    p.add_argument("--keep", type=Path, default=None, help="keep the dumps here")
    p.add_argument("--analyze", type=Path, default=None, help="only analyze the dumps in this directory")
    p.add_argument("--sites", type=int, default=40, help="allocation sites listed")
    args = p.parse_args(argv)
    if args.analyze is not None:
        print(analyze(args.analyze, args.n, args.sites))
        return 0
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-heap-"))
    directory.mkdir(parents=True, exist_ok=True)
    seen = measure(args.app_dir, args.n or 10_000, directory)
    print(f"RSS growth of master + worker under tracemalloc: {seen['rss_tree_per_stream']:,.0f} B/stream")
    print(analyze(directory, seen.get("connected"), args.sites))
    print(f"\ndumps: {directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
