"""``GET /ws`` against a real gunicorn, with the ``websockets`` client from PyPI:
events, subscribe and unsubscribe on a live socket, resume by id across a
restart, the close codes (capacity, per-IP, slow consumer, garbage,
shutdown), tokens and private events, and the counts."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.tokens import SECRET, mint
from tests.support.ws_raw import RawWebSocket

API_TOKEN = "ws-operator"


@contextmanager
def socket_to(server: ServerProcess, query: str = "", **headers: str) -> Iterator[ClientConnection]:
    with connect(f"ws://127.0.0.1:{server.port}/ws{query}", open_timeout=5, additional_headers=headers) as ws:
        yield ws


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(json.dumps(message))


def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def recv_until(ws: ClientConnection, kind: str, timeout: float = 5) -> list[dict[str, Any]]:
    """Every message up to and including the first of ``kind``."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1]["type"] != kind:
        got.append(recv(ws, max(0.05, deadline - time.monotonic())))
    return got


def subscribe(ws: ClientConnection, *topics: str, last_event_id: str | None = None) -> None:
    """Subscribe, and know the server applied it (a ping's pong comes after)."""
    send(ws, type="subscribe", topics=list(topics), **({"last_event_id": last_event_id} if last_event_id else {}))
    send(ws, type="ping")


def publish(server: ServerProcess, topic: str, data: Any, **fields: Any) -> str:
    answer = server.http.post("/events", json={"topic": topic, "data": data, **fields})
    assert answer.status_code == 202, answer.text
    event_id: str = answer.json()["id"]
    return event_id


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    started = start_server({"API_TOKEN": API_TOKEN, "JWT_SECRET": SECRET, "STREAM_AUTH": "optional"})
    started.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    return started


@pytest.mark.timeout(60)
def test_events_subscribe_and_unsubscribe_on_a_live_socket(server: ServerProcess) -> None:
    with socket_to(server) as ws:
        subscribe(ws, "a/*")
        assert recv_until(ws, "pong") == [{"type": "pong"}]  # no jobs/ topic: no snapshot
        first = publish(server, "a/1", {"n": 1})
        publish(server, "b/1", "not for us")
        assert recv(ws) == {"type": "event", "id": first, "event": "message", "topic": "a/1", "data": {"n": 1}}
        subscribe(ws, "a/*", "b/*")
        recv_until(ws, "pong")
        publish(server, "b/2", "text stays text", event="log")
        assert recv(ws)["data"] == "text stays text"
        send(ws, type="unsubscribe", topics=["a/*"])
        send(ws, type="ping")
        recv_until(ws, "pong")
        publish(server, "a/2", 2)
        last = publish(server, "b/3", 3)
        assert recv(ws)["id"] == last  # a/2 never came
        health = server.health()["stream"]
        assert health["by_transport"] == {"sse": 0, "ws": 1}
        clients = server.http.get("/admin/clients").json()["clients"]
        assert [c["transport"] for c in clients] == ["ws"] and clients[0]["topics"] == ["b/*"]


@pytest.mark.timeout(60)
def test_resume_by_id_across_a_restart_loses_and_doubles_nothing(start_server: StartServer, tmp_path: Any) -> None:
    env = {"API_TOKEN": API_TOKEN, "STREAM_HISTORY_SIZE": "100", "JOBS_DB": str(tmp_path / "kept.db")}
    server = start_server(env)
    server.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    sent = [publish(server, "r", n) for n in range(5)]
    with socket_to(server) as ws:
        subscribe(ws, "r", last_event_id=sent[1])
        assert [m["data"] for m in recv_until(ws, "pong")[:-1]] == [2, 3, 4]
    server.stop()
    again = start_server(env)  # the same database file: the ids survive
    again.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    sent += [publish(again, "r", n) for n in range(5, 8)]
    with socket_to(again) as ws:
        subscribe(ws, "r", last_event_id=sent[4])
        got = [m for m in recv_until(ws, "pong") if m["type"] == "event"]
        assert [m["data"] for m in got] == [5, 6, 7] and [m["id"] for m in got] == sent[5:]


@pytest.mark.timeout(60)
def test_capacity_and_the_per_ip_limit_close_with_1013_and_a_retry_hint(start_server: StartServer) -> None:
    for env in ({"STREAM_MAX_CONNECTIONS": "1"}, {"STREAM_MAX_CONNECTIONS_PER_IP": "1"}):
        server = start_server(env)
        with socket_to(server) as first:
            subscribe(first, "x")
            recv_until(first, "pong")
            with socket_to(server) as second, pytest.raises(ConnectionClosed) as closed:
                second.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert json.loads(closed.value.rcvd.reason)["retry_ms"] > 0
        server.stop()


@pytest.mark.timeout(60)
def test_garbage_gets_error_frames_and_a_stream_of_it_1008(server: ServerProcess) -> None:
    with socket_to(server) as ws:
        ws.send("{not json")
        assert recv(ws) == {"type": "error", "error": "message is not JSON"}
        send(ws, type="subscribe", topics=["ok", "bad\u0000topic"])
        assert "CR, LF or NUL" in recv(ws)["error"]
        send(ws, type="dance")
        assert recv(ws)["error"].startswith("type must be one of")
        send(ws, type="ping")
        assert recv(ws) == {"type": "pong"}  # still open, counting from zero again
        for _ in range(10):
            ws.send(b"\x00binary")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


@pytest.mark.timeout(60)
def test_a_bad_token_is_a_401_before_the_upgrade_and_private_events_skip_anonymous_sockets(
    server: ServerProcess,
) -> None:
    with pytest.raises(InvalidStatus) as refused, socket_to(server, Authorization=f"Bearer {mint(ttl=-60)}"):
        pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body) == {"error": "invalid token: expired"}
    with pytest.raises(InvalidStatus) as foreign, socket_to(server, Origin="https://evil.example"):
        pass
    assert foreign.value.response.status_code == 403
    alice = mint(sub="alice", subscribe=["chat/*"])
    with socket_to(server) as anonymous, socket_to(server, f"?access_token={alice}") as reader:
        for ws in (anonymous, reader):
            subscribe(ws, "chat/*")
            recv_until(ws, "pong")
        before = publish(server, "elsewhere", "marker")  # nobody here reads it
        secret = publish(server, "chat/1", "secret", private=True)
        public = publish(server, "chat/1", "public")
        assert [recv(reader)["id"], recv(reader)["id"]] == [secret, public]
        assert recv(anonymous)["id"] == public  # live: the private one skipped
        subscribe(anonymous, "chat/*", last_event_id=before)
        replayed = recv_until(anonymous, "pong")
        assert [m.get("id") for m in replayed] == [public, None]  # in replay too


def stalled_socket(server: ServerProcess) -> RawWebSocket:
    """A client that reads nothing until told to, with a small receive buffer
    (a library client would keep reading)."""
    stalled = RawWebSocket(server.port, receive_buffer=4096)
    stalled.send({"type": "subscribe", "topics": ["flood"]})
    return stalled


@pytest.mark.timeout(60)
def test_a_socket_that_stops_reading_is_closed_with_4008(start_server: StartServer) -> None:
    server = start_server({"API_TOKEN": API_TOKEN, "STREAM_SEND_TIMEOUT": "1", "STREAM_KEEPALIVE_INTERVAL": "30"})
    server.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    stalled = stalled_socket(server)
    try:
        server.wait_for(lambda: server.health()["stream"]["by_transport"]["ws"] == 1)
        big = "x" * 20_000
        with httpx.Client(base_url=server.url(), headers=server.http.headers, timeout=10) as http:
            deadline = time.monotonic() + 30
            while server.health()["stream"]["evicted"] == 0:
                assert time.monotonic() < deadline, f"never evicted: {server.health()['stream']}"
                for _ in range(20):
                    http.post("/events", json={"topic": "flood", "data": big})
        closed = stalled.close_frame()  # reading again, within the grace: the rest, then the close
        assert (closed.code, closed.reason) == (4008, "slow consumer")
    finally:
        stalled.sock.close()


@pytest.mark.timeout(60)
def test_sigterm_closes_sockets_with_1012_and_a_retry_hint_within_2_s(server: ServerProcess) -> None:
    with socket_to(server) as ws:
        subscribe(ws, "x")
        recv_until(ws, "pong")
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert time.monotonic() - started < 2.5
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert json.loads(closed.value.rcvd.reason)["retry_ms"] > 0
    assert server.wait(10) == 0
