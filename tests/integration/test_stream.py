"""/stream against a real gunicorn gevent server: headers, topics, limits, cleanup."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient, SSEEvent


@pytest.mark.timeout(30)
def test_stream_headers_and_opening_bytes(shared_server: ServerProcess) -> None:
    client = SSEClient(shared_server.port, params=[("topic", "nothing")], headers={"Accept-Encoding": "gzip, br"})
    with client.open():
        client.wait(lambda c: c.comments)
        headers = client.response_headers
        assert client.status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in headers
        assert "content-length" not in headers
        for hop in ("keep-alive", "proxy-connection", "upgrade"):
            assert hop not in headers
        assert bytes(client.raw).startswith(b"retry: 3000\n:")
        assert client.retry == 3000


@pytest.mark.timeout(30)
def test_topic_filters_exact_prefix_and_none(shared_server: ServerProcess) -> None:
    exact = SSEClient(shared_server.port, params=[("topic", "tf/a")]).open()
    prefix = SSEClient(shared_server.port, params=[("topic", "tf/deep/*")]).open()
    union = SSEClient(shared_server.port, params=[("topic", "tf/a"), ("topic", "tf/b")]).open()
    everything = SSEClient(shared_server.port).open()
    clients = (exact, prefix, union, everything)
    try:
        for c in clients:
            c.wait(lambda c: c.comments)
        for topic in ("tf/a", "tf/b", "tf/deep/x", "tf/deep/x/y", "tf/deeper", "tf/a/sub"):
            shared_server.publish(topic, topic, event="t")
        everything.wait_events(6, event="t")
        expected = {
            id(exact): ["tf/a"],
            id(prefix): ["tf/deep/x", "tf/deep/x/y"],
            id(union): ["tf/a", "tf/b"],
            id(everything): ["tf/a", "tf/b", "tf/deep/x", "tf/deep/x/y", "tf/deeper", "tf/a/sub"],
        }
        for c in (exact, prefix, union):
            want = len(expected[id(c)])
            c.wait(lambda c, want=want: len(c.of("t")) >= want)
        for c in clients:
            assert [e.data for e in c.of("t")] == expected[id(c)]
    finally:
        for c in clients:
            c.close()


@pytest.mark.timeout(60)
def test_capacity_refuses_with_503_and_health_stays_fast(start_server: StartServer) -> None:
    server = start_server({"STREAM_MAX_CONNECTIONS": "20", "STREAM_KEEPALIVE_INTERVAL": "1"})
    clients = [SSEClient(server.port, params=[("topic", "cap")]).connect() for _ in range(25)]
    try:
        for c in clients:
            c.read_headers()
        refused = [c for c in clients if c.status == 503]
        accepted = [c for c in clients if c.status == 200]
        assert len(refused) == 5 and len(accepted) == 20
        for c in refused:
            assert int(c.response_headers["retry-after"]) >= 1
            c.wait_eof()
            assert json.loads(bytes(c.raw))["error"] == "server at capacity"
        timings = []
        for _ in range(10):
            started = time.monotonic()
            body = server.health()
            timings.append(time.monotonic() - started)
            assert body["stream"]["active_connections"] == 20
        assert sorted(timings)[-2] < 0.1, timings
        assert body["stream"]["rejected"] == 5
        for c in accepted[:10]:
            c.close()
        server.wait_for(lambda: server.health()["stream"]["active_connections"] == 10, timeout=15)
        more = [SSEClient(server.port, params=[("topic", "cap")]).open() for _ in range(10)]
        clients += more
        assert [c.status for c in more] == [200] * 10
        assert server.health()["stream"]["active_connections"] == 20
    finally:
        for c in clients:
            c.close()


@pytest.mark.timeout(60)
def test_disconnected_clients_leave_within_one_keepalive(start_server: StartServer) -> None:
    server = start_server({"STREAM_KEEPALIVE_INTERVAL": "1"})
    clients = [SSEClient(server.port).open() for _ in range(12)]
    server.wait_for(lambda: server.health()["stream"]["active_connections"] == 12)
    for c in clients[:5]:
        c.close()
    for c in clients[5:10]:
        c.abort()  # RST, like a killed browser
    started = time.monotonic()
    server.wait_for(lambda: server.health()["stream"]["active_connections"] == 2, timeout=5)
    assert time.monotonic() - started < 2.5  # one keep-alive interval plus scheduling
    closed = [r for r in server.log_records() if r.get("event") == "stream_closed"]
    assert len(closed) == 10 and {r["reason"] for r in closed} == {"client"}
    for c in clients[10:]:
        c.close()


@pytest.mark.timeout(30)
def test_a_closed_tab_frees_its_slot_at_once_not_at_the_next_keepalive(start_server: StartServer) -> None:
    # With a 60 s keep-alive, only the hang-up watch can notice within a second.
    server = start_server({"STREAM_KEEPALIVE_INTERVAL": "60", "STREAM_MAX_CONNECTIONS": "4"})
    clients = [SSEClient(server.port, params=[("topic", "tabs")]).open() for _ in range(4)]
    server.wait_for(lambda: server.health()["stream"]["active_connections"] == 4)
    started = time.monotonic()
    clients[0].close()
    clients[1].abort()
    server.wait_for(lambda: server.health()["stream"]["active_connections"] == 2, timeout=5)
    assert time.monotonic() - started < 1.5
    # The freed slots are usable right away, and the others still get events.
    again = [SSEClient(server.port, params=[("topic", "tabs")]).open() for _ in range(2)]
    assert [c.status for c in again] == [200, 200]
    event_id = server.publish("tabs", "still here")
    for c in (*clients[2:], *again):
        assert c.wait_events(1)[0].id == event_id
        c.close()


@pytest.mark.timeout(30)
def test_an_http_1_0_client_gets_unchunked_events(shared_server: ServerProcess) -> None:
    # Events to an idle stream are written by the fan-out itself (streaming/core/writer.py):
    # HTTP/1.1 gets chunks, HTTP/1.0 the bare bytes, exactly as gunicorn frames them.
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(b"GET /stream?topic=old HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while b": connected" not in data:
            data += sock.recv(65536)
        assert b"transfer-encoding" not in data.lower()
        ids = [shared_server.publish("old", n) for n in range(3)]
        expected = b"".join(f"id: {i}\nevent: message\ndata: {n}\n\n".encode() for n, i in enumerate(ids))
        while expected not in data:
            data += sock.recv(65536)
    body = data.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"retry: 3000\n: connected") and expected in body


@pytest.mark.timeout(30)
def test_idle_stream_gets_keepalive_comments(start_server: StartServer) -> None:
    server = start_server({"STREAM_KEEPALIVE_INTERVAL": "0.3"})
    with SSEClient(server.port, params=[("topic", "idle")]).open() as c:
        c.wait(lambda c: c.comments.count("keepalive") >= 3, timeout=5)
        assert c.events == []


@pytest.mark.timeout(90)
def test_slow_client_is_evicted_and_others_get_everything(start_server: StartServer) -> None:
    server = start_server(
        {"STREAM_SEND_TIMEOUT": "1", "STREAM_CLEANUP_INTERVAL": "1", "STREAM_KEEPALIVE_INTERVAL": "5"}
    )
    stalled = SSEClient(server.port, params=[("topic", "bulk")]).connect(recv_buffer=4096)
    stalled.read_headers()  # and then never reads again
    reader = SSEClient(server.port, params=[("topic", "bulk")], timeout=30).open()
    server.wait_for(lambda: server.health()["stream"]["active_connections"] == 2)
    payload = "x" * 4096
    total = 2000
    received: list[list[SSEEvent]] = []
    thread = threading.Thread(target=lambda: received.append(reader.wait_events(total, timeout=60, event="bulk")))
    thread.start()
    evicted_at = None
    with httpx.Client(base_url=server.url(), timeout=10) as http:
        for n in range(total):
            response = http.post("/events", json={"topic": "bulk", "event": "bulk", "data": f"{n}:{payload}"})
            assert response.status_code == 202
            if evicted_at is None and n % 100 == 0 and http.get("/health").json()["stream"]["evicted"]:
                evicted_at = n
    # Eviction needs the buffer full for the send timeout (1 s), then a
    # publish or a sweep (every 1 s) to notice.
    server.wait_for(lambda: server.health()["stream"]["evicted"] == 1, timeout=1 + 1 + 1)
    thread.join(60)
    events = received[0]
    assert [int(e.data.split(":", 1)[0]) for e in events] == list(range(total))
    health = server.health()["stream"]
    assert health["active_connections"] == 1
    evictions = [r for r in server.log_records() if r.get("event") == "stream_closed" and r.get("reason") == "evicted"]
    assert len(evictions) == 1
    reader.close()
    stalled.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("sig", "streams"), [(signal.SIGTERM, 50), (signal.SIGINT, 10)], ids=["SIGTERM", "SIGINT"])
def test_stop_signals_end_every_stream_with_shutdown(start_server: StartServer, sig: int, streams: int) -> None:
    server = start_server()
    clients = [SSEClient(server.port, params=[("topic", "bye")]).open() for _ in range(streams)]
    try:
        server.wait_for(lambda: server.health()["stream"]["active_connections"] == streams)
        started = time.monotonic()
        server.send_signal(sig)
        for c in clients:
            c.wait_events(1, event="shutdown", timeout=3)
            c.wait_eof(timeout=3)
        assert time.monotonic() - started < 2.0
        assert server.wait(15) == 0
        assert clients[0].of("shutdown")[0].json()["reason"]
    finally:
        for c in clients:
            c.close()


def test_health_reports_the_spec_fields(shared_server: ServerProcess) -> None:
    response = httpx.get(shared_server.url("/health"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert isinstance(body["timestamp"], int) and abs(body["timestamp"] - time.time()) < 5
    assert set(body["stream"]) >= {"active_connections", "total_messages", "max_connections"}
    assert set(body["jobs"]) >= {"total", "pending", "in_progress", "completed", "cancelled", "error"}
