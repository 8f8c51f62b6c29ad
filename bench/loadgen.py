"""Build and drive the Go load generator (bench/loadgen, stdlib only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import raise_nofile

SRC = Path(__file__).resolve().parent / "loadgen"
BUILD = Path(__file__).resolve().parent / "build"
BINARY = BUILD / "loadgen"


class LoadgenError(RuntimeError):
    """The load generator could not be built or did not finish cleanly."""


def build() -> Path:
    """Compile the load generator if a source file is newer than the binary."""
    sources = [*SRC.glob("*.go"), SRC / "go.mod"]
    if BINARY.exists() and BINARY.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return BINARY
    go = shutil.which("go")
    if go is None:
        raise LoadgenError("`go` not found: apt-get install golang-go")
    BUILD.mkdir(exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOPROXY="off")
    res = subprocess.run(
        [go, "build", "-o", str(BINARY), "."],
        cwd=SRC,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if res.returncode != 0:
        raise LoadgenError(f"go build failed:\n{res.stderr}")
    return BINARY


@dataclass
class Load:
    """One load-generator invocation; field names mirror its flags."""

    n: int
    rate: float = 0.0
    duration: float = 0.0
    pub_conns: int = 32
    pad: int = 0
    health_rate: float = 0.0
    never_read_pct: float = 0.0
    stall_pct: float = 0.0
    stall_at: float = 1.0
    stall_for: float = 3.0
    reconnect: bool = True  # like EventSource: resume with Last-Event-ID
    honor_retry: bool = False  # wait the stream's retry: before reconnecting (else 100 ms)
    drain: float = 30.0  # cap; ends early when complete or 2 s without progress
    connect_conc: int = 256
    wait_stdin: bool = False

    def args(self) -> list[str]:
        a = [
            f"-n={self.n}",
            f"-rate={self.rate}",
            f"-duration={self.duration}s",
            f"-pub-conns={self.pub_conns}",
            f"-pad={self.pad}",
            f"-health-rate={self.health_rate}",
            f"-never-read-pct={self.never_read_pct}",
            f"-stall-pct={self.stall_pct}",
            f"-stall-at={self.stall_at}s",
            f"-stall-for={self.stall_for}s",
            f"-drain={self.drain}s",
            f"-connect-conc={self.connect_conc}",
            f"-reconnect={str(self.reconnect).lower()}",
        ]
        if self.wait_stdin:
            a.append("-wait-stdin")
        if self.honor_retry:
            a.append("-honor-retry")
        return a

    def max_seconds(self) -> float:
        """Hard cap on the run's wall time before it is killed."""
        return 90 + self.n / 50 + self.duration + self.drain + self.stall_for


def run(
    url: str,
    stream: str,
    publish: str,
    style: str,
    load: Load,
    health: str = "/health",
    topic: str = "bench",
    on_connected: Callable[[dict[str, Any]], None] | None = None,
    tokens: tuple[Path, Path] | None = None,
    transport: str = "sse",
) -> dict[str, Any]:
    """Run the load generator once; returns its final JSON result.

    on_connected is called once every stream is open (before publishing,
    or before closing them when load.wait_stdin is set). tokens: the files
    of the streams' Bearer tokens (one a line) and of the publisher's.
    transport "ws": each stream is a WebSocket at ``stream`` that subscribes
    to ``topic`` (Jobstream's /ws) instead of an SSE GET.
    """
    binary = build()
    cmd = [
        str(binary),
        f"-url={url}",
        f"-stream={stream}",
        f"-publish={publish}",
        f"-health={health}",
        f"-style={style}",
        f"-topic={topic}",
        f"-transport={transport}",
        *load.args(),
    ]
    if tokens is not None:
        cmd += [f"-stream-tokens={tokens[0]}", f"-publish-token={tokens[1]}"]
    raise_nofile()  # inherited by the child
    with subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        timer = threading.Timer(load.max_seconds(), proc.kill)
        timer.start()
        try:
            last = _converse(proc, load, on_connected)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    if not last:
        raise LoadgenError(f"loadgen gave no result (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(last)
    return result


def _converse(
    proc: subprocess.Popen[str],
    load: Load,
    on_connected: Callable[[dict[str, Any]], None] | None,
) -> str:
    """Read the "connected" line, let the caller look, go on, read the result."""
    assert proc.stdout is not None and proc.stdin is not None
    first = proc.stdout.readline()
    if not first:
        err = proc.stderr.read() if proc.stderr else ""
        raise LoadgenError(f"loadgen ended early: {err[-2000:]}")
    if on_connected is not None:
        on_connected(json.loads(first))
    if load.wait_stdin:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    last = proc.stdout.readline()
    proc.wait(30)
    return last
