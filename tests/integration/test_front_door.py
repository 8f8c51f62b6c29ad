"""The worker's front door (server/front.py, server/worker.py) under real gunicorn.

A plain ``GET /stream`` as a connection's first request is read by the front
door; anything else must be answered exactly as gunicorn answers it. Streams
through the front door are covered by every other streaming test (they all
connect this way); these check the edges a user would notice.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import StartServer
from tests.support.server import ServerProcess


def exchange(port: int, request: bytes, until: bytes = b"\r\n\r\n") -> bytes:
    """Send ``request`` on a new connection; read until ``until`` or the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while until not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def fields_of(reply: bytes) -> tuple[str, dict[str, str]]:
    head = reply.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return head[0], {name.lower(): value for name, _, value in (line.partition(": ") for line in head[1:])}


@pytest.fixture(scope="module")
def without_front_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("no-front"), env={"STREAM_FRONT_DOOR": "0"})
    server.start()
    yield server
    server.discard()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nX_Odd: 1\r\n\r\n",  # gunicorn drops this field
        b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nX-A: one\r\n  folded\r\n\r\n",
        b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n",
        b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    ],
    ids=["underscore field", "obs-fold", "content-length", "two hosts", "disagreeing scheme", "100-continue"],
)
def test_a_request_beyond_plain_gets_gunicorns_answer(
    shared_server: ServerProcess, without_front_door: ServerProcess, request_bytes: bytes
) -> None:
    """The same status as with no front door at all, from gunicorn's own response."""
    status, fields = fields_of(exchange(shared_server.port, request_bytes))
    expected, _ = fields_of(exchange(without_front_door.port, request_bytes))
    assert status == expected
    if status.startswith("HTTP/1.1 200"):
        assert fields["server"] == "gunicorn"


@pytest.mark.timeout(30)
def test_a_request_split_across_writes_is_still_served(shared_server: ServerProcess) -> None:
    """The front door sees only half a head, leaves it, and gunicorn waits for the rest."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(b"GET /stream?topic=a HTTP/1.1\r\nHo")
        sock.sendall(b"st: x\r\n\r\n")
        reply = b""
        while b": connected" not in reply:
            reply += sock.recv(65536)
    status, _ = fields_of(reply)
    assert status == "HTTP/1.1 200 OK"  # by gunicorn, or by the front door if both writes arrived first


@pytest.mark.timeout(30)
def test_a_refusal_through_the_front_door_keeps_its_status_and_json(start_server: StartServer) -> None:
    server = start_server(env={"STREAM_MAX_CONNECTIONS": "1"})
    with httpx.Client(timeout=10) as client, client.stream("GET", server.url("/stream?topic=a")) as first:
        assert first.status_code == 200
        reply = exchange(server.port, b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\n\r\n", until=b"}")
        status, fields = fields_of(reply)
        assert status.startswith("HTTP/1.1 503") and "server" not in fields
        assert fields["connection"] == "close" and int(fields["retry-after"]) >= 1
        body = json.loads(reply.partition(b"\r\n\r\n")[2][: int(fields["content-length"])])
        assert body["error"]


@pytest.mark.timeout(30)
def test_a_trusted_proxys_forwarded_address_counts_through_the_front_door(start_server: StartServer) -> None:
    server = start_server(env={"TRUSTED_PROXIES": "1", "STREAM_MAX_CONNECTIONS_PER_IP": "1"})
    forwarded = b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
        held.sendall(forwarded)
        assert b": connected" in held.recv(65536)
        status, _ = fields_of(exchange(server.port, forwarded, until=b"}"))
        assert status.startswith("HTTP/1.1 429")  # the same forwarded address, already streaming
        other = forwarded.replace(b"203.0.113.7", b"203.0.113.8")
        assert b": connected" in exchange(server.port, other, until=b": connected")
        clients = server.http.get("/admin/clients").json()["clients"]
        assert "203.0.113.7" in {c["ip"] for c in clients}


@pytest.mark.timeout(30)
def test_stream_front_door_0_leaves_every_request_to_gunicorn(start_server: StartServer) -> None:
    server = start_server(env={"STREAM_FRONT_DOOR": "0"})
    status, fields = fields_of(exchange(server.port, b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == "HTTP/1.1 200 OK"
    assert fields["server"] == "gunicorn" and fields["connection"] == "keep-alive"


@pytest.mark.timeout(30)
def test_an_access_log_turns_the_front_door_off_and_says_so(start_server: StartServer) -> None:
    server = start_server(args=["--access-logfile", "-"])
    _, fields = fields_of(exchange(server.port, b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert fields["server"] == "gunicorn"
    assert "front door off: accesslog is set" in server.log()
