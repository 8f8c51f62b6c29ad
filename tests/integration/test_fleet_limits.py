"""Fleet-wide limits and view: two gunicorn masters ("hosts") on one real Redis.

Host A has two workers, host B one; every stream comes from its own loopback
address (127.0.0.0/8), so per-address and fleet limits can be told apart.
The lease is 2 s, so a killed host's slots must be free within 2 s (plus the
time to notice); every wait polls for the state a user would see.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import StartServer
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

LEASE_SECONDS = 2.0
TOPIC = [("topic", "fleet/x")]


def fleet_env(redis: RedisServer, name: str, workers: int) -> dict[str, str]:
    return {
        "REDIS_URL": redis.url,
        "WEB_CONCURRENCY": str(workers),
        "INSTANCE_NAME": name,
        "STREAM_MAX_CONNECTIONS_PER_IP": "2",
        "STREAM_MAX_CONNECTIONS_FLEET": "4",
        "STREAM_FLEET_LEASE_SECONDS": str(LEASE_SECONDS),
    }


def stream(server: ServerProcess, source: str) -> SSEClient:
    return SSEClient(server.port, params=TOPIC, source=source, timeout=5).open()


@contextmanager
def attempt(server: ServerProcess, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """One ``/stream`` from ``source``: its status and, if refused, its JSON body."""
    transport = httpx.HTTPTransport(local_address=source)
    with (
        httpx.Client(transport=transport, timeout=5) as http,
        http.stream("GET", server.url("/stream"), params={"topic": "fleet/x"}) as response,
    ):
        body: dict[str, Any] = {}
        if response.status_code != 200:
            response.read()
            body = response.json()
        yield response.status_code, body


def status_of(server: ServerProcess, source: str) -> int:
    with attempt(server, source) as (status, _):
        return status


def clients(server: ServerProcess, **params: str) -> list[dict[str, Any]]:
    with httpx.Client(timeout=5) as http:  # a new connection: any worker may answer
        body = http.get(server.url("/admin/clients"), params=params).json()
    assert body["scope"] == "fleet"
    return body["clients"]  # type: ignore[no-any-return]


def open_within(server: ServerProcess, source: str, seconds: float) -> tuple[SSEClient, float]:
    """Retry a stream from ``source`` until it is let in; the seconds it took."""
    started = time.monotonic()
    while True:
        client = stream(server, source)
        if client.status == 200:
            return client, time.monotonic() - started
        client.close()
        assert time.monotonic() - started < seconds, f"still refused ({client.status}) after {seconds}s"
        time.sleep(0.1)


@pytest.mark.timeout(60)
def test_limits_and_listing_span_hosts_and_a_killed_host_frees_its_slots(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    a = start_server(fleet_env(redis_server, "host-a", 2), name="a")
    b = start_server(fleet_env(redis_server, "host-b", 1), name="b")
    opened: list[SSEClient] = []
    try:
        # Per address: two streams on host A use up 127.0.0.1 on host B too.
        opened += [stream(a, "127.0.0.1"), stream(a, "127.0.0.1")]
        assert [c.status for c in opened] == [200, 200]
        with attempt(b, "127.0.0.1") as (status, body):
            assert status == 429
            assert body["reason"] == "per_ip" and body["error"] == "too many streams from this address"

        # Fleet: 4 streams in all, whichever host holds them.
        opened += [stream(b, "127.0.0.2"), stream(b, "127.0.0.3")]
        assert [c.status for c in opened[2:]] == [200, 200]
        for host in (a, b):
            with attempt(host, "127.0.0.4") as (status, body):
                assert status == 503 and body["reason"] == "capacity"

        # The listing on A names B's streams, with B's host and worker pid.
        b_pids = set(b.worker_pids())
        a.wait_for(lambda: len(clients(a)) == 4, timeout=5)
        listed = clients(a)
        on_b = sorted((c["ip"], c["host"]) for c in listed if c["worker_pid"] in b_pids)
        assert on_b == [("127.0.0.2", "host-b"), ("127.0.0.3", "host-b")]
        assert {c["host"] for c in listed} == {"host-a", "host-b"}
        assert all({"id", "user_agent", "connected_at", "topics", "lag_seconds"} <= set(c) for c in listed)
        assert sorted(c["ip"] for c in clients(a, host="host-b")) == ["127.0.0.2", "127.0.0.3"]
        assert [c["ip"] for c in clients(b, host="host-a")] == ["127.0.0.1", "127.0.0.1"]
        assert clients(a, host="nowhere") == []

        # A stream that ends gives its slot back to the whole fleet.
        opened.pop(0).close()
        back, _ = open_within(b, "127.0.0.1", 3)
        opened.append(back)

        # kill -9 host B (master and worker, 3 slots): they come back within the lease.
        b.kill()
        killed = time.monotonic()
        opened.append(open_within(a, "127.0.0.5", LEASE_SECONDS + 2)[0])
        freed = time.monotonic() - killed
        assert freed <= LEASE_SECONDS + 1.5, freed
        a.wait_for(lambda: all(c["host"] == "host-a" for c in clients(a)), timeout=LEASE_SECONDS + 1.5)
    finally:
        for client in opened:
            client.close()


@pytest.mark.timeout(40)
def test_redis_down_admits_on_the_instance_limits_without_hanging(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    server = start_server({**fleet_env(redis_server, "solo", 1), "STREAM_MAX_CONNECTIONS_FLEET": "3"})
    opened = [stream(server, "127.0.0.9")]
    redis_server.pause()  # connections stay open, nothing answers
    try:
        check_fallback(server, redis_server, opened)
    finally:
        for client in opened:
            client.close()


def check_fallback(server: ServerProcess, redis_server: RedisServer, opened: list[SSEClient]) -> None:
    try:
        started = time.monotonic()
        opened.append(stream(server, "127.0.0.9"))
        assert opened[-1].status == 200
        assert time.monotonic() - started < 3.0  # one Redis timeout at most
        # The instance's per-address limit still holds, at once.
        started = time.monotonic()
        assert status_of(server, "127.0.0.9") == 429
        assert time.monotonic() - started < 1.0
        server.wait_for_log('"event": "fleet_down"', timeout=5)
        metrics = httpx.get(server.url("/metrics"), timeout=5).text
        assert "jobstream_fleet_limits_up 0.0" in metrics
        # Both admissions since the pause were decided without Redis.
        assert "jobstream_fleet_fallback_admissions_total 2.0" in metrics, metrics[-600:]
    finally:
        redis_server.resume()
    # Back up: the fleet limit (3) counts the two streams let in meanwhile.
    server.wait_for_log('"event": "fleet_up"', timeout=5)
    opened.append(stream(server, "127.0.0.10"))
    assert opened[-1].status == 200
    assert status_of(server, "127.0.0.11") == 503
