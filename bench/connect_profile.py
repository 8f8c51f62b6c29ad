"""Worker CPU per connect, and where it goes: ``python -m bench.connect_profile``.

Opens ``--n`` streams against a fresh server (as the connect scenario does),
reads every worker's user and system CPU from ``/proc`` before and once all
are open, and divides by the streams: no profiler attached, so these are the
figures to quote. With ``--py-spy FILE`` a second pass samples the worker with
py-spy during the connects only and sorts every sample into one step of a
connect (the first frame from the leaf that a rule in ``STEPS`` claims).

    python -m bench.connect_profile --target floor --n 10000 --rounds 3
    python -m bench.connect_profile --target ceiling --n 10000 --rounds 3
    python -m bench.connect_profile --target jobstream --n 10000 --py-spy /tmp/js.txt
"""

from __future__ import annotations

import argparse
import gzip
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench import loadgen, servers
from bench.loadgen import Load
from bench.procs import _children, raise_nofile

ROOT = Path(__file__).resolve().parent.parent

# (step, rule on "function (file:line)"): the first rule, leaf first, that
# matches a frame names the step of that sample. Order matters only within
# one frame; a deeper frame always wins over a shallower one.
STEPS: list[tuple[str, re.Pattern[str]]] = [
    ("metrics", re.compile(r"prometheus_client/|ops/metrics\.py")),
    ("logging", re.compile(r"logging/__init__\.py|logformat\.py|pythonjsonlogger/")),
    ("registry admission", re.compile(r"core/registry\.py|scaleout/instance\.py|ops/observers\.py")),
    ("opening (retry, replay, snapshot)", re.compile(r"transport/stream\.py|core/history\.py|core/broker\.py|jobs/")),
    ("socket options, hang-up watch", re.compile(r"tune_stream_socket|transport/hangup\.py|enable_direct")),
    ("client record", re.compile(r"core/client\.py|core/writer\.py|new_client|gevent/queue|_queue")),
    (
        "request: query, topics, token",
        re.compile(
            r"(query_pairs|readable|stream_grant|background|last_event_id) \(streaming/transport/connect|core/topics\.py|server/readers\.py|urllib/parse"
        ),
    ),
    ("first write (head + opening, one send)", re.compile(r"_send_head_with_first_chunk|_plain_gunicorn_response")),
    ("front door: peek, parse, environ, response", re.compile(r"server/front\.py|server/http1\.py|server/worker\.py")),
    (
        "app: fast path, Flask",
        re.compile(
            r"fastpath\.py|begin_stream|/flask/|/werkzeug/|proxies\.py|floor_app\.py|ceiling_worker\.py|app\.py"
        ),
    ),
    ("gunicorn parse", re.compile(r"gunicorn/http/(?!wsgi)|gunicorn_h1c")),
    ("gunicorn environ, response, close", re.compile(r"gunicorn/http/wsgi\.py|gunicorn/workers/")),
    ("gevent accept, greenlets, sockets", re.compile(r"gevent/")),
]
OTHER = "other"
GC = "garbage collector"
NATIVE: list[str] = []  # ["--native"] with --native: C frames too (the collector)
# A sample whose leaf is a socket call is in the kernel or, mostly, waiting
# for the CPU: a loopback send wakes the load generator, which preempts the
# worker (py-spy samples wall time). These are left out of the shares and
# stand for the system CPU that /proc measures instead.
KERNEL = "kernel: socket calls (system CPU, from /proc)"
_SYSCALL = re.compile(
    r"SocketMixin\.(send|sendall|recv|setsockopt|getsockopt|getsockname) |StreamServer\.do_read \(gevent/server\.py:190"
)


def step_of(stack: str) -> str:
    if _SYSCALL.search(stack.rpartition(";")[2]):
        return KERNEL
    if "gc_collect" in stack or "collect_with_callback" in stack:
        return GC
    for frame in reversed(stack.split(";")):
        for name, rule in STEPS:
            if rule.search(frame):
                return name
    return OTHER


def breakdown(raw: Path) -> Counter[str]:
    """Samples per step from py-spy's ``--format raw`` (collapsed stacks; ``.gz`` too)."""
    out: Counter[str] = Counter()
    text = gzip.decompress(raw.read_bytes()).decode() if raw.suffix == ".gz" else raw.read_text()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out[step_of(stack)] += int(count)
    return out


def _worker_cpu(pids: list[int]) -> dict[int, tuple[float, float]]:
    tick = 100.0
    out = {}
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[pid] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return out


def _launcher(target: str, n: int, app_dir: Path) -> AbstractContextManager[servers.Target]:
    cap = n + n // 10 + 100
    if target in ("floor", "ceiling"):
        return servers.floor(cap, ceiling=target == "ceiling")
    if target == "jobstream-2w":
        return servers.jobstream(app_dir, cap, workers=2)
    return servers.jobstream(app_dir, cap)


def one_round(target: str, n: int, app_dir: Path, spy: Path | None) -> dict[str, Any]:
    with _launcher(target, n, app_dir) as tgt:
        workers = sorted(_children(tgt.pid))
        topic = "bench" + secrets.token_hex(4)
        stream = tgt.stream_path.replace("{topic}", topic)
        recorder = _start_spy(workers[0], spy) if spy is not None else None
        before = _worker_cpu(workers)
        after: dict[int, tuple[float, float]] = {}

        def connected(info: dict[str, Any]) -> None:
            after.update(_worker_cpu(workers))
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(30)

        raw = loadgen.run(
            tgt.base_url,
            stream,
            tgt.publish_path,
            tgt.style,
            Load(n=n, wait_stdin=True),
            topic=topic,
            on_connected=connected,
        )
    per_worker = {
        pid: {
            "user_us": 1e6 * (after[pid][0] - before[pid][0]) / raw["connected"],
            "sys_us": 1e6 * (after[pid][1] - before[pid][1]) / raw["connected"],
        }
        for pid in workers
    }
    total = sum(w["user_us"] + w["sys_us"] for w in per_worker.values())
    return {
        "connect_rate": raw["connect_rate"],
        "connected": raw["connected"],
        "failures": raw.get("connect_failures"),
        "cpu_us_per_connect": total,
        "workers": per_worker,
    }


def _start_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "400",
            "--format",
            "raw",
            *(NATIVE or ["--nonblocking"]),  # --native needs the target paused per sample
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc


def table(samples: Counter[str], user_us: float, sys_us: float) -> Iterator[str]:
    """Shares of the user-space samples, scaled to the user CPU measured
    without the profiler; the kernel row is the measured system CPU."""
    total = sum(n for name, n in samples.items() if name != KERNEL) or 1
    yield "| step | share of user-space samples | ≈ µs per connect |"
    yield "|---|---|---|"
    for name in [name for name, _ in STEPS] + [GC, OTHER]:
        if samples[name]:
            share = samples[name] / total
            yield f"| {name} | {100 * share:.1f} % | {share * user_us:.0f} |"
    yield f"| {KERNEL} | ({samples[KERNEL]} samples left out) | {sys_us:.0f} |"
    yield f"| total | | {user_us + sys_us:.0f} |"


def main(argv: list[str] | None = None, emit: Callable[[str], None] = print) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.connect_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", default="jobstream", choices=["jobstream", "jobstream-2w", "floor", "ceiling"])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--app-dir", type=Path, default=ROOT)
    p.add_argument("--py-spy", type=Path, default=None, help="also sample one worker into this file")
    p.add_argument(
        "--table", type=Path, default=None, help="only print the table of a py-spy file (with --user-us, --sys-us)"
    )
    p.add_argument("--user-us", type=float, default=0.0)
    p.add_argument("--sys-us", type=float, default=0.0)
    p.add_argument("--native", action="store_true", help="py-spy --native: C frames, so the collector shows")
    args = p.parse_args(argv)
    if args.native:
        NATIVE.append("--native")
    if args.table is not None:
        for line in table(breakdown(args.table), args.user_us, args.sys_us):
            emit(line)
        return 0
    raise_nofile()
    loadgen.build()
    cpu, split = [], []
    for rnd in range(1, args.rounds + 1):
        res = one_round(args.target, args.n, args.app_dir, None)
        cpu.append(res["cpu_us_per_connect"])
        workers = res["workers"].values()
        split.append((res["cpu_us_per_connect"], sum(w["user_us"] for w in workers), sum(w["sys_us"] for w in workers)))
        emit(
            f"round {rnd}: {res['connect_rate']:.0f} connects/s, {res['cpu_us_per_connect']:.0f} µs CPU per connect, workers {res['workers']}, failures {res['failures']}"
        )
    cpu.sort()
    median = cpu[len(cpu) // 2]
    _, user_us, sys_us = sorted(split)[len(split) // 2]
    emit(
        f"{args.target}: median {median:.0f} µs worker CPU per connect over {len(cpu)} rounds ({cpu[0]:.0f}-{cpu[-1]:.0f})"
    )
    if args.py_spy is not None:
        res = one_round(args.target, args.n, args.app_dir, args.py_spy)
        emit(f"sampled round: {res['connect_rate']:.0f} connects/s under py-spy")
        for line in table(breakdown(args.py_spy), user_us, sys_us):
            emit(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
