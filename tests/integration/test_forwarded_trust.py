"""X-Forwarded-For is believed only from FORWARDED_ALLOW_IPS peers, against a real gunicorn.

The server trusts one hop (``TRUSTED_PROXIES=1``) from the default
``FORWARDED_ALLOW_IPS`` (127.0.0.1, ::1). Clients bind other loopback
addresses to play one that reaches gunicorn directly, past the proxy.
Through the real nginx: ``tests/integration/test_nginx.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("xff"), env={"TRUSTED_PROXIES": "1", "STREAM_MAX_CONNECTIONS_PER_IP": "1"}
    )
    proc.start()
    yield proc
    proc.stop(timeout=10)


def ips_of(server: ServerProcess, agent: str) -> list[str]:
    return [c["ip"] for c in server.http.get("/admin/clients").json()["clients"] if c["user_agent"] == agent]


def stream(server: ServerProcess, agent: str, source: str, forwarded_for: str) -> SSEClient:
    headers = {"User-Agent": agent, "X-Forwarded-For": forwarded_for}
    return SSEClient(server.port, params=[("topic", "xff")], headers=headers, source=source).open()


@pytest.mark.timeout(30)
def test_a_direct_client_is_seen_at_its_own_address(server: ServerProcess) -> None:
    with stream(server, "direct", "127.0.0.3", "203.0.113.7") as client:
        client.wait(lambda c: c.comments)
        assert ips_of(server, "direct") == ["127.0.0.3"]
    opened = [r for r in server.log_records() if r.get("event") == "stream_opened" and r["user_agent"] == "direct"]
    assert [r["ip"] for r in opened] == ["127.0.0.3"]


@pytest.mark.timeout(30)
def test_an_allowed_proxy_is_believed(server: ServerProcess) -> None:
    with stream(server, "proxied", "127.0.0.1", "6.6.6.6, 203.0.113.8") as client:
        client.wait(lambda c: c.comments)
        assert ips_of(server, "proxied") == ["203.0.113.8"]  # one hop: the right-most entry only


@pytest.mark.timeout(30)
def test_a_direct_client_cannot_dodge_the_per_ip_limit(server: ServerProcess) -> None:
    first = stream(server, "dodger", "127.0.0.4", "198.51.100.1")
    second = stream(server, "dodger", "127.0.0.4", "198.51.100.2")
    try:
        assert first.status == 200
        assert second.status == 429, second.raw
        assert ips_of(server, "dodger") == ["127.0.0.4"]
    finally:
        first.close()
        second.close()
    refused = [r for r in server.log_records() if r.get("event") == "stream_rejected" and r["user_agent"] == "dodger"]
    assert [r["ip"] for r in refused] == ["127.0.0.4"]


@pytest.mark.timeout(30)
def test_an_allowed_network_and_star_are_believed(start_server: StartServer) -> None:
    for allow in ("127.0.0.0/29", "*"):
        proc = start_server(env={"TRUSTED_PROXIES": "1", "FORWARDED_ALLOW_IPS": allow})
        with stream(proc, "lb", "127.0.0.5", "203.0.113.9") as client:
            client.wait(lambda c: c.comments)
            assert ips_of(proc, "lb") == ["203.0.113.9"], allow
        # Outside the network: not believed.
        with stream(proc, "outside", "127.0.0.9", "203.0.113.9") as client:
            client.wait(lambda c: c.comments)
            assert ips_of(proc, "outside") == ["203.0.113.9" if allow == "*" else "127.0.0.9"], allow
        proc.stop(timeout=10)
