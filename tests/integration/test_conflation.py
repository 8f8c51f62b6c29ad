"""Conflation against a real gunicorn: a reader that stops reading while one
job's progress pours in keeps a bounded buffer, and when it reads again it
gets that job's newest progress, then the final state; nothing is dropped.

The reader is a raw HTTP/1.0 socket with a small receive buffer (no chunked
framing to undo), so the server's socket fills after a few events and the
rest wait in the stream's buffer, where conflation happens.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.conftest import StartServer
from tests.support.server import ServerProcess

API_TOKEN = "conflation-operator"
REPORTS = 2000
PADDING = "x" * 2000  # big events fill the socket buffers quickly


def _open_stalled_reader(server: ServerProcess) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /stream?topic=progress/job1 HTTP/1.0\r\nHost: t\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # only the head: the body waits for later
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    return sock


def _read_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout}s; got {data[-300:]!r}"
        chunk = sock.recv(65536)
        assert chunk, "the stream ended"
        data += chunk
    return data


def _events(raw: bytes) -> list[tuple[str, str]]:
    """(event, data) of every complete frame."""
    out = []
    for frame in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("event", "message"), fields["data"]))
    return out


@pytest.mark.timeout(120)
def test_a_stalled_reader_gets_the_newest_progress_then_the_final_state(start_server: StartServer) -> None:
    server = start_server({"API_TOKEN": API_TOKEN, "STREAM_SEND_TIMEOUT": "60", "STREAM_HISTORY_SIZE": "100"})
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    sock = _open_stalled_reader(server)
    try:
        depth = 0
        with httpx.Client(base_url=server.url(), headers=auth, timeout=10) as http:
            for n in range(REPORTS):
                body = {"topic": "progress/job1", "event": "progress", "data": f"{n}:{PADDING}", "key": "job1"}
                assert http.post("/events", json=body).status_code == 202
                if n % 200 == 0:
                    clients = http.get("/admin/clients").json()["clients"]
                    depth = max(depth, *(c["queue_depth"] for c in clients))
            assert (
                http.post("/events", json={"topic": "progress/job1", "event": "done", "data": "completed"}).status_code
                == 202
            )
            stream = http.get("/health").json()["stream"]
        assert depth <= 50  # STREAM_CLIENT_BUFFER: never more, however many reports came
        assert stream["conflated"] > 0 and stream["dropped"] == 0, stream
        raw = _read_until(sock, b"data: completed", timeout=20)
    finally:
        sock.close()
    events = _events(raw)
    progress = [int(data.split(":", 1)[0]) for name, data in events if name == "progress"]
    assert events[-1] == ("done", "completed")
    assert progress[-1] == REPORTS - 1  # the newest report, never a stale one last
    assert progress == sorted(progress) and len(progress) < REPORTS  # in order, the superseded ones gone
    assert not any(name == "reset" for name, _ in events)
