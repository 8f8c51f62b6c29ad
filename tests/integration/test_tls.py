"""gunicorn serving TLS itself (``--certfile``/``--keyfile``): streams stay whole.

A parked stream is written by the fan-out straight to its OS socket (direct
writes), and the front door reads a connection's first bytes off that socket
too. Under TLS neither may happen: one plaintext byte in a TLS session ends
it on the client. So the front door must be off, and every event of a fan-out
must reach real TLS clients intact and in order, over SSE and over ``/ws``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import connect_sse
from websockets.sync.client import connect

from tests.support.server import ServerProcess

EVENTS = 40  # enough that most are written while the stream is parked


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    server = ServerProcess(workdir, args=["--certfile", str(cert), "--keyfile", str(key)])
    server.verify = ssl.create_default_context(cafile=str(cert))
    server.start()
    yield server
    server.discard()


def publish_all(server: ServerProcess, topic: str) -> list[str]:
    return [server.publish(topic, {"n": n, "pad": "x" * 200}) for n in range(EVENTS)]


@pytest.mark.timeout(30)
def test_the_front_door_is_off_and_says_why(tls_server: ServerProcess) -> None:
    assert tls_server.scheme == "https"
    tls_server.wait_for_log("front door off: TLS is set")
    # A plaintext request on the TLS port meets gunicorn's TLS handshake, never a stream.
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as sock:
        sock.sendall(b"GET /stream?topic=tls/plain HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                reply += chunk
    assert b"text/event-stream" not in reply and not reply.startswith(b"HTTP/1.1 200")


@pytest.mark.timeout(30)
def test_every_event_reaches_an_sse_stream_over_tls_in_order(tls_server: ServerProcess) -> None:
    topic = "tls/sse"
    with (
        httpx.Client(timeout=10, verify=tls_server.verify) as http,
        connect_sse(http, "GET", tls_server.url(f"/stream?topic={topic}")) as source,
    ):
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        sent = publish_all(tls_server, topic)
        got = []
        for sse in source.iter_sse():
            if sse.event == "message":
                got.append(sse)
            if len(got) == EVENTS:
                break
    assert [e.id for e in got] == sent
    assert [json.loads(e.data)["n"] for e in got] == list(range(EVENTS))


@pytest.mark.timeout(30)
def test_every_event_reaches_a_websocket_over_tls_in_order(tls_server: ServerProcess) -> None:
    topic = "tls/ws"
    with connect(f"wss://127.0.0.1:{tls_server.port}/ws", ssl=tls_server.verify, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}  # the subscribe is applied
        sent = publish_all(tls_server, topic)
        got = [json.loads(ws.recv(timeout=5)) for _ in range(EVENTS)]
    assert [m["id"] for m in got] == sent
    assert [m["data"]["n"] for m in got] == list(range(EVENTS))
