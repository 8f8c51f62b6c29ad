"""``/ws`` served in front of Flask by one greenlet (``streaming/transport/ws_fastpath.py``),
against a real gunicorn: the protocol duties simple-websocket used to do for it. A message in
fragments, one too big (1009), a client's ping, the closing handshake either way, and the
keep-alive pings that close a peer which stopped answering (1008)."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect
from wsproto.events import CloseConnection, Ping, TextMessage

from streaming.transport.ws_messages import MAX_MESSAGE_BYTES
from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.ws_raw import RawWebSocket


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server({"STREAM_KEEPALIVE_INTERVAL": "1"})


def message(raw: RawWebSocket) -> dict[str, object]:
    """The next JSON message (past any protocol ping)."""
    event, _ = raw.until(TextMessage, timeout=5)
    assert isinstance(event, TextMessage)
    body: dict[str, object] = json.loads(event.data)
    return body


@pytest.mark.timeout(60)
def test_fragments_make_one_message_and_an_oversized_one_closes_with_1009(server: ServerProcess) -> None:
    raw = RawWebSocket(server.port)
    try:
        raw.send({"type": "ping"}, fragments=3)
        assert message(raw) == {"type": "pong"}
        raw.send({"type": "subscribe", "topics": ["x" * (MAX_MESSAGE_BYTES + 1)]}, fragments=4)
        closed = raw.close_frame(timeout=5)
        assert (closed.code, closed.reason) == (1009, "message too big")
    finally:
        raw.close()
    server.wait_for(lambda: server.health()["stream"]["by_transport"].get("ws", 0) == 0)


@pytest.mark.timeout(60)
def test_a_peer_that_stops_answering_pings_is_closed_with_1008_and_one_that_answers_stays(
    server: ServerProcess,
) -> None:
    raw = RawWebSocket(server.port)  # reads, but never answers a ping
    try:
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as answering:  # websockets answers them
            answering.send(json.dumps({"type": "subscribe", "topics": ["t"]}))
            closed, seen = raw.until(CloseConnection, timeout=8)
            assert isinstance(closed, CloseConnection)
            assert (closed.code, closed.reason) == (1008, "Ping/Pong timeout")
            assert any(isinstance(e, Ping) for e in seen)
            # Its neighbour, pinged as often, still gets events.
            event_id = server.publish("t", "still here")
            assert json.loads(answering.recv(timeout=5))["id"] == event_id
            assert server.health()["stream"]["by_transport"]["ws"] == 1
    finally:
        raw.close()


@pytest.mark.timeout(60)
def test_the_closing_handshake_works_both_ways(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}
    assert (
        ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    )  # the server's reply, not a timeout
    server.wait_for(lambda: server.health()["stream"]["by_transport"].get("ws", 0) == 0)
    raw = RawWebSocket(server.port)
    try:
        raw.sock.sendall(raw.ws.send(CloseConnection(1001, "going away")))
        reply = raw.close_frame(timeout=5)
        assert reply.code == 1001
        assert raw.sock.recv(1) == b""  # then the server closes the TCP connection
    finally:
        raw.close()


@pytest.mark.timeout(60)
def test_through_gunicorns_own_request_path_too(start_server: StartServer) -> None:
    # With the front door off gunicorn parses the upgrade and hands the socket over; it must
    # then close the connection without writing a response of its own after the socket's end.
    server = start_server({"STREAM_FRONT_DOOR": "0"})
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["t"]}))
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}
        event_id = server.publish("t", {"n": 1})
        assert json.loads(ws.recv(timeout=5)) == {
            "type": "event",
            "id": event_id,
            "event": "message",
            "topic": "t",
            "data": {"n": 1},
        }
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    server.wait_for(lambda: server.health()["stream"]["by_transport"].get("ws", 0) == 0)
    assert "Traceback" not in server.log() and "Error handling request" not in server.log()
