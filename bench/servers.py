"""Start and stop the servers under test: Jobstream and its peers.

Every server binds 127.0.0.1 on a free port, gets a raised fd limit, is
polled on its health URL until ready, and is stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.auth import BenchAuth
from bench.procs import free_port, raise_nofile, wait_http_ok

PEERS = Path(__file__).resolve().parent / "peers"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


class ServerError(RuntimeError):
    """The server could not be started (missing binary, not ready, ...)."""


@dataclass
class Target:
    """A running server and how the load generator talks to it."""

    name: str
    port: int
    pid: int
    stream_path: str  # "{topic}" is replaced by the run's topic
    publish_path: str
    style: str  # publish body: "jobstream" envelope or "raw" data
    health_path: str = "/health"
    log: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    auth: BenchAuth | None = None  # streams and publishes need its tokens
    transport: str = "sse"  # "ws": stream_path is a WebSocket that subscribes to the topic

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start cmd in its own session; it inherits our raised fd limit."""
    raise_nofile()
    with open(log, "wb") as fh:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL to the whole session after ``timeout``; return once
    no process of it is left. A gunicorn worker whose master was killed lives
    on for seconds at full CPU (it was under the next target's first rounds,
    run QM in docs/benchmarks.md)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    _end_session(proc.pid)


def _end_session(pgid: int, timeout: float = 10.0) -> None:
    """SIGKILL what is left of the session ``_start`` made (its id is the leader's pid)."""
    deadline = time.monotonic() + timeout
    while _alive_in_group(pgid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.05)


def _alive_in_group(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a zombie waiting to be reaped does not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")".
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30.0) -> None:
    if not wait_http_ok(url, timeout, alive=lambda: proc.poll() is None):
        _stop(proc)
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise ServerError(f"not ready at {url} (exit {proc.poll()}):\n{tail}")


def _start_redis(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on loopback: no snapshots, no AOF."""
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    return _start(cmd, tmp, dict(os.environ), tmp / "redis.log")


@contextmanager
def jobstream(
    app_dir: Path,
    max_conns: int,
    workers: int = 1,
    redis_url: bool | None = None,
    auth: BenchAuth | None = None,
    fleet: bool = False,
    transport: str = "sse",
    config: Path | None = None,
    env_extra: dict[str, str] | None = None,
) -> Iterator[Target]:
    """gunicorn + gevent Jobstream from app_dir; with Redis when asked or workers > 1;
    with auth, every stream needs a JWT (STREAM_AUTH=required); with fleet (and
    Redis), every admission is counted fleet-wide (per-IP and fleet limits set
    high enough never to refuse the load generator's one address); transport "ws":
    the streams are WebSockets on /ws (the target's name ends in -ws). config: a
    gunicorn config file instead of app_dir's (``bench/heapconf.py``)."""
    if not (app_dir / "app.py").exists():
        raise ServerError(f"no app.py in {app_dir}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-js-"))
    port = free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",  # whatever the caller's shell exports
        PORT=str(port),
        STREAM_MAX_CONNECTIONS=str(max_conns),
        JOBS_DB=str(tmp / "jobs.db"),
        WEB_CONCURRENCY=str(workers),
        **(auth.env() if auth is not None else {}),
        **(env_extra or {}),
    )
    if fleet:
        env.update(STREAM_MAX_CONNECTIONS_PER_IP=str(max_conns), STREAM_MAX_CONNECTIONS_FLEET=str(max_conns))
    redis: subprocess.Popen[bytes] | None = None
    try:
        with_redis = workers > 1 if redis_url is None else redis_url
        if with_redis:
            if shutil.which("redis-server") is None:
                raise ServerError("redis-server not installed")
            rport = free_port()
            redis = _start_redis(rport, tmp)
            env["REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
        cmd = [sys.executable, "-m", "gunicorn", "-c", str(config or "gunicorn.conf.py"), "app:app"]
        log = tmp / "server.log"
        proc = _start(cmd, app_dir, env, log)
        _ready(proc, f"http://127.0.0.1:{port}/health", log)
        name = "jobstream" + ("-redis" if with_redis and workers == 1 else "") + (f"-{workers}w" if workers > 1 else "")
        name += "-auth" if auth is not None else ""
        name += "-fleet" if fleet else ""
        name += "-ws" if transport == "ws" else ""
        try:
            yield Target(
                name,
                port,
                proc.pid,
                "/ws" if transport == "ws" else "/stream?topic={topic}",
                "/events",
                "jobstream",
                log=log,
                auth=auth,
                transport=transport,
            )
        finally:
            _stop(proc)
    finally:
        if redis is not None:
            _stop(redis)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def starlette() -> Iterator[Target]:
    """The sse-starlette peer (bench/peers/starlette_app.py) on uvicorn."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-st-"))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.peers.starlette_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--backlog",
        "4096",
        "--loop",
        "auto",
        "--http",
        "auto",
    ]
    log = tmp / "server.log"
    proc = _start(cmd, PEERS.parent.parent, dict(os.environ), log)
    try:
        _ready(proc, f"http://127.0.0.1:{port}/health", log)
        yield Target(
            "sse-starlette",
            port,
            proc.pid,
            "/stream?topic={topic}",
            "/events",
            "jobstream",
            log=log,
        )
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def nchan() -> Iterator[Target]:
    """nginx + nchan from bench/peers/nchan.conf with a temp prefix dir."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not NCHAN_MODULE.exists():
        raise ServerError("nginx or libnginx-mod-nchan not installed")
    tmp = Path(tempfile.mkdtemp(prefix="bench-nchan-"))
    port = free_port()
    conf = (PEERS / "nchan.conf").read_text()
    conf = conf.replace("{{PREFIX}}", str(tmp)).replace("{{PORT}}", str(port))
    (tmp / "nginx.conf").write_text(conf)
    log = tmp / "server.log"
    cmd = [nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-g", "daemon off;"]
    proc = _start(cmd, tmp, dict(os.environ), log)
    try:
        _ready(proc, f"http://127.0.0.1:{port}/health", log)
        yield Target("nchan", port, proc.pid, "/sub/{topic}", "/pub/{topic}", "raw", log=log)
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def floor(max_conns: int, ceiling: bool = False) -> Iterator[Target]:
    """bench/floor_app.py on the same gunicorn -k gevent (and parser) as Jobstream;
    with ceiling, bench/ceiling_worker.py instead: no HTTP parsing, no app."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "bench.ceiling_worker.CeilingWorker" if ceiling else "gevent",
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-connections",
        str(max_conns + max(100, max_conns // 10)),
        "--log-level",
        "warning",
        "--graceful-timeout",  # its streams never end: not 15 s of waiting for them per round
        "1",
        "bench.ceiling_worker:app" if ceiling else "bench.floor_app:app",
    ]
    log = tmp / "server.log"
    proc = _start(cmd, PEERS.parent.parent, dict(os.environ), log)
    try:
        _ready(proc, f"http://127.0.0.1:{port}/health", log)
        yield Target(
            "ceiling" if ceiling else "floor", port, proc.pid, "/stream?topic={topic}", "/events", "jobstream", log=log
        )
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
