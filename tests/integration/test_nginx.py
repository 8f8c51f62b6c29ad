"""deploy/nginx.conf in front of a real gunicorn, started as docs/deployment.md says.

nginx connects to gunicorn from 127.0.0.2 (``proxy_bind``; the app's
``FORWARDED_ALLOW_IPS`` lists it) and test clients connect from other
loopback addresses, so the address the app reports can only be the client's
if it came from X-Forwarded-For through ProxyFix.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.nginx import NginxProcess
from tests.support.server import ROOT, ServerProcess
from tests.support.sse import SSEClient

KEEPALIVE = 0.5
READ_TIMEOUT = 2  # nginx's proxy_read_timeout in this copy: 4 keep-alives


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, NginxProcess]]:
    server = ServerProcess(
        tmp_path_factory.mktemp("upstream"),
        env={
            "TRUSTED_PROXIES": "1",
            "FORWARDED_ALLOW_IPS": "127.0.0.2",
            "STREAM_KEEPALIVE_INTERVAL": str(KEEPALIVE),
            "STREAM_MAX_CONNECTIONS_PER_IP": "2",
        },
    ).start()
    nginx = NginxProcess(
        tmp_path_factory.mktemp("nginx"),
        server.port,
        ["--set", f"proxy_read_timeout={READ_TIMEOUT}s", "--set", "worker_processes=1", "--proxy-bind", "127.0.0.2"],
    )
    try:
        nginx.start()
        yield server, nginx
    finally:
        nginx.stop()
        server.stop(timeout=10)


def streams_from(server: ServerProcess, ip: str) -> list[dict[str, object]]:
    return [c for c in server.http.get("/admin/clients").json()["clients"] if c["ip"] == ip]


@pytest.mark.timeout(30)
def test_events_arrive_through_nginx_within_100ms(stack: tuple[ServerProcess, NginxProcess]) -> None:
    server, nginx = stack
    client = SSEClient(nginx.http_port, params=[("topic", "ngx/fast")], headers={"Accept-Encoding": "gzip"})
    with client.open():
        assert client.status == 200
        assert client.response_headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in client.response_headers
        client.wait(lambda c: c.comments)
        delays = []
        for n in range(10):
            started = time.monotonic()
            server.publish("ngx/fast", n)
            client.wait_events(n + 1, timeout=2)
            delays.append(time.monotonic() - started)
        assert max(delays) < 0.1, delays
        assert [e.json() for e in client.events] == list(range(10))


@pytest.mark.timeout(30)
def test_keepalives_hold_an_idle_stream_past_nginx_read_timeout(stack: tuple[ServerProcess, NginxProcess]) -> None:
    server, nginx = stack
    with SSEClient(nginx.http_port, params=[("topic", "ngx/idle")], source="127.0.0.7").open() as client:
        started = time.monotonic()
        client.wait(lambda c: c.comments.count("keepalive") >= (READ_TIMEOUT + 1) / KEEPALIVE, timeout=10)
        assert time.monotonic() - started > READ_TIMEOUT + 0.5
        assert not client.eof and client.events == []
        server.publish("ngx/idle", "still here")
        assert client.wait_events(1)[0].data == "still here"


@pytest.mark.timeout(30)
def test_a_read_timeout_below_the_keepalive_interval_cuts_idle_streams(
    stack: tuple[ServerProcess, NginxProcess], tmp_path: Path
) -> None:
    # The control for the test above: the same stream through an nginx whose
    # read timeout is shorter than the keep-alive interval ends early.
    server, _ = stack
    short = NginxProcess(
        tmp_path / "short", server.port, ["--set", f"proxy_read_timeout={int(KEEPALIVE * 500)}ms"]
    ).start()
    try:
        with SSEClient(short.http_port, params=[("topic", "ngx/idle")], source="127.0.0.8").open() as client:
            client.wait_eof(timeout=5)
            assert client.comments.count("keepalive") == 0
    finally:
        short.stop()


@pytest.mark.timeout(30)
def test_registry_sees_the_client_ip_from_forwarded_for(stack: tuple[ServerProcess, NginxProcess]) -> None:
    server, nginx = stack
    # A client-supplied X-Forwarded-For is kept by nginx but not trusted.
    headers = {"User-Agent": "via-nginx", "X-Forwarded-For": "6.6.6.6"}
    with SSEClient(nginx.http_port, params=[("topic", "ngx/ip")], headers=headers, source="127.0.0.3").open() as c:
        c.wait(lambda c: c.comments)
        mine = [s for s in server.http.get("/admin/clients").json()["clients"] if s["user_agent"] == "via-nginx"]
        assert [s["ip"] for s in mine] == ["127.0.0.3"]
    opened = [r for r in server.log_records() if r.get("event") == "stream_opened" and r["user_agent"] == "via-nginx"]
    assert [r["ip"] for r in opened] == ["127.0.0.3"]


@pytest.mark.timeout(30)
def test_a_client_past_nginx_is_not_believed(stack: tuple[ServerProcess, NginxProcess]) -> None:
    server, _ = stack
    # Straight to gunicorn from 127.0.0.1, not nginx's 127.0.0.2: the header is the client's own.
    headers = {"User-Agent": "past-nginx", "X-Forwarded-For": "127.0.0.3"}
    with SSEClient(server.port, params=[("topic", "ngx/ip")], headers=headers).open() as c:
        c.wait(lambda c: c.comments)
        mine = [s for s in server.http.get("/admin/clients").json()["clients"] if s["user_agent"] == "past-nginx"]
        assert [s["ip"] for s in mine] == ["127.0.0.1"]


@pytest.mark.timeout(30)
def test_per_ip_limit_through_nginx_counts_each_client_address(stack: tuple[ServerProcess, NginxProcess]) -> None:
    server, nginx = stack
    first = [SSEClient(nginx.http_port, params=[("topic", "ngx/ip")], source="127.0.0.4").open() for _ in range(2)]
    spoof = {"X-Forwarded-For": "127.0.0.9"}
    over = SSEClient(nginx.http_port, params=[("topic", "ngx/ip")], headers=spoof, source="127.0.0.4").open()
    other = SSEClient(nginx.http_port, params=[("topic", "ngx/ip")], source="127.0.0.5").open()
    try:
        assert [c.status for c in first] == [200, 200]
        assert over.status == 429
        assert int(over.response_headers["retry-after"]) >= 1
        over.wait_eof()
        assert "too many streams" in over.raw.decode()
        assert other.status == 200
        assert len(streams_from(server, "127.0.0.4")) == 2
        assert len(streams_from(server, "127.0.0.5")) == 1
    finally:
        for c in (*first, over, other):
            c.close()


@pytest.mark.timeout(30)
def test_browser_disconnect_through_nginx_frees_the_slot(stack: tuple[ServerProcess, NginxProcess]) -> None:
    server, nginx = stack
    tabs = [SSEClient(nginx.http_port, params=[("topic", "ngx/tab")], source="127.0.0.6").open() for _ in range(2)]
    try:
        assert [t.status for t in tabs] == [200, 200]
        tabs[0].abort()  # a closed tab: RST to nginx, which drops its upstream connection
        server.wait_for(lambda: len(streams_from(server, "127.0.0.6")) == 1, timeout=5)
        with SSEClient(nginx.http_port, params=[("topic", "ngx/tab")], source="127.0.0.6").open() as again:
            assert again.status == 200
    finally:
        for t in tabs:
            t.close()
    closed = [r for r in server.log_records() if r.get("event") == "stream_closed" and r["ip"] == "127.0.0.6"]
    assert closed and closed[0]["reason"] == "client"


@pytest.mark.timeout(30)
def test_tls_server_speaks_http2_and_streams_over_it(stack: tuple[ServerProcess, NginxProcess]) -> None:
    server, nginx = stack
    context = ssl.create_default_context(cafile=str(nginx.cert))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", nginx.https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(nginx.cert)), timeout=5) as http:
        health = http.get(nginx.url("/health", tls=True))
        assert health.status_code == 200 and health.http_version == "HTTP/2"
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        missing = http.get(nginx.url("/no-such-page", tls=True))  # `always`: on errors too
        assert missing.status_code == 404 and missing.headers["strict-transport-security"] == "max-age=31536000"
        with http.stream("GET", nginx.url("/stream?topic=ngx/h2", tls=True)) as response:
            assert response.http_version == "HTTP/2"
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith(": connected"))
            server.publish("ngx/h2", {"over": "h2"})
            assert next(line for line in lines if line.startswith("data:")) == 'data: {"over":"h2"}'


@pytest.mark.timeout(30)
def test_oversized_body_gets_a_json_413_from_nginx(stack: tuple[ServerProcess, NginxProcess]) -> None:
    _, nginx = stack
    body = b'{"topic": "a", "data": "' + b"x" * 70000 + b'"}'
    response = httpx.post(nginx.url("/events"), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    # HSTS is for the TLS server only (browsers ignore it over plain HTTP anyway, RFC 6797 section 8.1).
    assert "strict-transport-security" not in response.headers
    assert "strict-transport-security" not in httpx.get(nginx.url("/health")).headers


def test_the_shipped_file_passes_nginx_t_and_drift_is_refused(tmp_path: Path) -> None:
    run = [sys.executable, "deploy/run_nginx.py", "--prefix", str(tmp_path / "p"), "--self-signed"]
    checked = subprocess.run([*run, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    drift = subprocess.run([*run, "--check", "--set", "no_such_directive=1"], cwd=ROOT, capture_output=True, text=True)
    assert drift.returncode != 0 and "no_such_directive" in drift.stderr


@pytest.mark.timeout(30)
def test_a_websocket_through_nginx_gets_events_and_keeps_the_clients_address(
    stack: tuple[ServerProcess, NginxProcess],
) -> None:
    server, nginx = stack
    with connect(f"ws://127.0.0.1:{nginx.http_port}/ws", open_timeout=5) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["ngx/ws"]}))
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}
        event_id = server.publish("ngx/ws", {"through": "nginx"})
        got = json.loads(ws.recv(timeout=5))
        assert (got["id"], got["data"]) == (event_id, {"through": "nginx"})
        ws_clients = [c for c in server.http.get("/admin/clients").json()["clients"] if c["transport"] == "ws"]
        assert [c["ip"] for c in ws_clients] == ["127.0.0.1"]  # the client's, not nginx's 127.0.0.2
