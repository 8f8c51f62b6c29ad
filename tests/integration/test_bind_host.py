"""``HOST`` against real gunicorn started as in production: ``gunicorn -c
gunicorn.conf.py app:app`` with ``PORT`` and no ``--bind``.

The address is read back from the kernel's table of listening sockets
(``/proc/net/tcp``, ``/proc/net/tcp6``) and tried from another loopback
address (127.0.0.2 is this machine too, but not 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.server import ROOT, TEST_ENV

pytestmark = pytest.mark.integration

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def listening(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port``."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                address, _, hex_port = local.partition(":")
                if state == LISTEN and int(hex_port, 16) == port:
                    # Each 32-bit word is in host (little-endian) byte order.
                    raw = b"".join(int(address[i : i + 8], 16).to_bytes(4, "little") for i in range(0, len(address), 8))
                    found.add(socket.inet_ntop(family, raw))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@contextmanager
def gunicorn(tmp_path: Path, host: str | None) -> Iterator[tuple[int, str]]:
    """A server bound by gunicorn.conf.py alone; yields its port and what it logged it listens at."""
    port = free_port()
    env = {**os.environ, **TEST_ENV, "PORT": str(port), "JOBS_DB": str(tmp_path / "jobs.db")}
    env.pop("HOST", None)
    if host is not None:
        env["HOST"] = host
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while not (match := re.search(r"Listening at: (\S+)", log_path.read_text(errors="replace"))):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "gunicorn did not listen within 20 s"
            time.sleep(0.05)
        yield port, match.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def health(host: str, port: int) -> int:
    url_host = f"[{host}]" if ":" in host else host
    return httpx.get(f"http://{url_host}:{port}/health", timeout=5).status_code


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.timeout(60)
def test_by_default_only_loopback_is_listened_on(tmp_path: Path) -> None:
    with gunicorn(tmp_path, None) as (port, url):
        assert url == f"http://127.0.0.1:{port}"
        assert listening(port) == {"127.0.0.1"}
        assert health("127.0.0.1", port) == 200
        assert refused("127.0.0.2", port)


@pytest.mark.timeout(60)
def test_host_0_0_0_0_listens_on_every_address(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "0.0.0.0") as (port, url):
        assert url == f"http://0.0.0.0:{port}"
        assert listening(port) == {"0.0.0.0"}
        assert health("127.0.0.1", port) == 200 and health("127.0.0.2", port) == 200


@pytest.mark.timeout(60)
def test_an_ipv6_host_is_bound_in_brackets(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with gunicorn(tmp_path, "::1") as (port, url):
        assert url == f"http://[::1]:{port}"
        assert listening(port) == {"::1"}
        assert health("::1", port) == 200
        assert refused("127.0.0.1", port)


@pytest.mark.timeout(30)
def test_a_bad_host_stops_gunicorn_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "HOST": "not a host", "JOBS_DB": str(tmp_path / "jobs.db")}
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode != 0
    line = json.loads(done.stderr.strip().splitlines()[0])
    assert line["variable"] == "HOST" and line["value"] == "not a host"
