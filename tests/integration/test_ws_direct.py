"""``/ws`` with direct writes from the fan-out (streaming/core/writer.py): the
order and completeness a client sees while the fan-out, the sender and a
replay all write to one socket. Real gunicorn, the ``websockets`` client."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from tests.conftest import StartServer
from tests.support.server import ServerProcess

API_TOKEN = "ws-direct"
TOPIC = "direct/t"


@pytest.fixture(params=["embedded", "redis"])
def server(request: pytest.FixtureRequest, start_server: StartServer) -> ServerProcess:
    """Embedded, and on Redis, where a replay waits for history (a switch the fan-out can run in)."""
    env = {"API_TOKEN": API_TOKEN, "STREAM_HISTORY_SIZE": "5000"}
    if request.param == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_server").url
    started = start_server(env)
    started.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    return started


def publish_many(server: ServerProcess, count: int, size: int, ids: list[str], started: threading.Event) -> None:
    """``count`` events as fast as one connection publishes them; their ids into ``ids``."""
    with httpx.Client(base_url=server.url(), headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10) as http:
        for n in range(count):
            answer = http.post("/events", json={"topic": TOPIC, "data": {"n": n, "pad": "x" * size}})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
            started.set()


def events_until(ws: ClientConnection, last_id: str, timeout: float = 30) -> list[str]:
    """The ids of every event message up to ``last_id`` (resets and snapshots would fail the test)."""
    got: list[str] = []
    while not got or got[-1] != last_id:
        message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
        assert message["type"] in ("event", "pong"), message
        if message["type"] == "event":
            got.append(message["id"])
    return got


def subscribe(ws: ClientConnection, last_event_id: str | None = None) -> None:
    message: dict[str, Any] = {"type": "subscribe", "topics": [TOPIC]}
    if last_event_id is not None:
        message["last_event_id"] = last_event_id
    ws.send(json.dumps(message))


@pytest.mark.timeout(90)
def test_a_resume_during_live_publishing_is_never_overtaken(server: ServerProcess) -> None:
    """A socket subscribing with ``last_event_id`` while events keep coming gets
    every later event once, in order: no live event written directly ahead of
    the replay, none doubled after it."""
    url = f"ws://127.0.0.1:{server.port}/ws"
    ids: list[str] = []
    started = threading.Event()
    with connect(url, open_timeout=5) as first:
        subscribe(first)
        first.send(json.dumps({"type": "ping"}))
        assert json.loads(first.recv(timeout=5)) == {"type": "pong"}
        publisher = threading.Thread(target=publish_many, args=(server, 600, 200, ids, started), daemon=True)
        publisher.start()
        assert started.wait(10)
        seen_first = [json.loads(first.recv(timeout=10))["id"] for _ in range(100)]
        with connect(url, open_timeout=5) as second:
            subscribe(second, last_event_id=seen_first[49])  # resumes 50 events back, mid-stream
            publisher.join(60)
            assert not publisher.is_alive()
            resumed = events_until(second, ids[-1])
        rest = events_until(first, ids[-1])
    assert seen_first + rest == ids  # the live socket: every event, in order
    assert resumed == ids[50:]


class SlowReader:
    """A WebSocket (wsproto on a raw socket, a small receive buffer) that reads only when told."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", server.port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target="/ws")))
        while not any(isinstance(e, AcceptConnection) for e in self._events()):
            pass
        subscribe_message = {"type": "subscribe", "topics": [TOPIC]}
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(subscribe_message))))
        self.sock.sendall(self.ws.send(TextMessage(json.dumps({"type": "ping"}))))
        self.text = ""
        assert self.messages_until(lambda m: m["type"] == "pong") == [{"type": "pong"}]

    def _events(self) -> list[object]:
        self.ws.receive_data(self.sock.recv(65536) or None)
        return list(self.ws.events())

    def messages_until(self, done: Any) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while not got or not done(got[-1]):
            for event in self._events():
                assert isinstance(event, TextMessage), event  # a corrupt frame would be a protocol error
                self.text += event.data
                if event.message_finished:
                    got.append(json.loads(self.text))
                    self.text = ""
        return got


@pytest.mark.timeout(90)
def test_a_burst_larger_than_the_socket_buffers_arrives_whole_and_in_order(server: ServerProcess) -> None:
    """Frames bigger than what the socket takes at once leave direct writes
    half-sent; the rest goes out before any other frame."""
    reader = SlowReader(server)
    try:
        ids: list[str] = []
        publish_many(server, 120, 60_000, ids, threading.Event())  # 7.2 MB the client does not read yet
        got = reader.messages_until(lambda m: m.get("id") == ids[-1])
    finally:
        reader.sock.close()
    assert [m["type"] for m in got] == ["event"] * len(ids)
    assert [m["id"] for m in got] == ids


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", ["0", "1"])
def test_permessage_deflate_only_when_asked_for(start_server: StartServer, compression: str) -> None:
    """The ``websockets`` client offers ``permessage-deflate`` as browsers do:
    declined by default (frames shared by every socket, written directly),
    accepted with ``STREAM_WS_COMPRESSION=1``; events arrive either way."""
    server = start_server({"API_TOKEN": API_TOKEN, "STREAM_WS_COMPRESSION": compression})
    server.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
        accepted = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in accepted) == (compression == "1")
        subscribe(ws)
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}
        ids: list[str] = []
        publish_many(server, 3, 5_000, ids, threading.Event())
        assert events_until(ws, ids[-1], timeout=10) == ids
