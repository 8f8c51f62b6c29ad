"""Calm shutdown and dead peers, against real gunicorn processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient, pump_all


class HealthPoller(threading.Thread):
    """Polls /health as fast as it can on one keep-alive connection (bounded)."""

    def __init__(self, server: ServerProcess, seconds: float) -> None:
        super().__init__(daemon=True)
        self.server, self.seconds = server, seconds
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.server.url(), timeout=2) as http:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    status = http.get("/health").status_code
                except httpx.HTTPError:
                    break  # the listener closed: the worker is exiting
                self.samples.append((started, status))


@pytest.mark.timeout(120)
def test_sigterm_with_500_streams_is_calm(start_server: StartServer) -> None:
    server = start_server({"STREAM_RETRY_MS": "1000", "STREAM_RECONNECT_JITTER_MS": "8000"})
    clients = [SSEClient(server.port, params=[("topic", "calm")], timeout=20).connect() for _ in range(500)]
    try:
        for c in clients:
            c.read_headers()
        server.wait_for(lambda: server.health()["stream"]["active_connections"] == 500, timeout=20)
        poller = HealthPoller(server, seconds=3)
        poller.start()
        server.wait_for(lambda: len(poller.samples) > 5)
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        pump_all(clients, lambda c: bool(c.of("shutdown")) and c.eof, timeout=10)
        all_closed = time.monotonic() - sent
        poller.join(10)
        code = server.wait(15)
        exited = time.monotonic() - sent
    finally:
        for c in clients:
            c.close()
    late = [status for started, status in poller.samples if started >= sent + 0.1]
    assert late and set(late) == {503}, "health must say draining within 100 ms of SIGTERM"
    assert all(c.eof for c in clients)
    retries = [c.of("shutdown")[0].retry for c in clients]
    assert all(r is not None and 1000 <= r <= 8000 for r in retries), retries[:10]
    assert len(set(retries)) > 100, "reconnect delays must be spread, not all equal"
    assert all(c.of("shutdown")[0].json()["reason"] for c in clients)
    assert all_closed < 2.0
    assert code == 0 and exited < 15  # graceful_timeout is 15 s


@pytest.mark.timeout(60)
def test_drain_window_spreads_closes_and_refuses_new_streams(start_server: StartServer) -> None:
    server = start_server({"STREAM_DRAIN_SECONDS": "2"})
    clients = [SSEClient(server.port, params=[("topic", "drain")]).open() for _ in range(40)]
    server.wait_for(lambda: server.health()["stream"]["active_connections"] == 40)
    probe = httpx.Client(base_url=server.url(), timeout=5)
    try:
        server.send_signal(signal.SIGTERM)
        server_busy = None
        closed_at: dict[int, float] = {}
        deadline = time.monotonic() + 8
        while len(closed_at) < 40 and time.monotonic() < deadline:
            if server_busy is None and len(closed_at) > 5:
                # Mid-window: still listening, but draining.
                health = probe.get("/health")
                late = SSEClient(server.port).open()
                # Refused the soft way (a 200 that says shutdown and ends), so a
                # browser sent back by a farewell's retry: tries again.
                late.wait_eof(timeout=5)
                server_busy = (health.status_code, health.json()["status"], late.status, late.of("shutdown")[0].retry)
                late.close()
            for i, c in enumerate(clients):
                if i not in closed_at:
                    c.pump(0.005)
                    if c.of("shutdown"):
                        closed_at[i] = time.monotonic()
        assert len(closed_at) == 40
        spread = max(closed_at.values()) - min(closed_at.values())
        assert spread > 1.0, f"closes were not spread: {spread:.2f}s"
        assert server_busy is not None and server_busy[:3] == (503, "draining", 200) and server_busy[3]
    finally:
        probe.close()
        for c in clients:
            c.close()
    assert server.wait(15) == 0


PAUSED_CLIENT = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /stream?topic=dead HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
s.recv(100)
print("ready", flush=True)
while s.recv(65536):
    pass
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("peer", ["paused-process", "stopped-reading"])
def test_dead_peers_are_removed_within_the_bound(start_server: StartServer, peer: str) -> None:
    keepalive, send_timeout, cleanup = 1.0, 1.0, 1.0
    bound = 2 * keepalive + send_timeout + cleanup
    server = start_server(
        {
            "STREAM_KEEPALIVE_INTERVAL": str(keepalive),
            "STREAM_SEND_TIMEOUT": str(send_timeout),
            "STREAM_CLEANUP_INTERVAL": str(cleanup),
        }
    )
    child: subprocess.Popen[str] | None = None
    raw: SSEClient | None = None
    healthy = SSEClient(server.port, params=[("topic", "dead")], timeout=30).open()
    try:
        if peer == "paused-process":
            child = subprocess.Popen(
                [sys.executable, "-c", PAUSED_CLIENT, str(server.port)], stdout=subprocess.PIPE, text=True
            )
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        else:
            raw = SSEClient(server.port, params=[("topic", "dead")]).connect(recv_buffer=4096)
            raw.read_headers()
        server.wait_for(lambda: server.health()["stream"]["active_connections"] == 2)
        if child is not None:
            child.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        removed_after = None
        with httpx.Client(base_url=server.url(), timeout=5) as http:
            # Job updates keep flowing, as they would in production.
            for n in range(2000):
                http.post("/events", json={"topic": "dead", "event": "n", "data": f"{n}:" + "y" * 16384})
                if n % 10 == 0:
                    healthy.pump(0.001)
                    if http.get("/health").json()["stream"]["active_connections"] == 1:
                        removed_after = time.monotonic() - stopped
                        break
        assert removed_after is not None, "the dead peer was never removed"
        assert removed_after <= bound + 1.5, f"removed after {removed_after:.2f}s; bound {bound}s"
        health = server.health()["stream"]
        assert health["active_connections"] == 1 and health["evicted"] + health["stale"] == 1
        healthy.wait(lambda c: c.comments.count("keepalive") >= 1 or c.of("n"), timeout=5)
    finally:
        healthy.close()
        if raw is not None:
            raw.close()
        if child is not None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait(5)
            assert child.stdout is not None
            child.stdout.close()
