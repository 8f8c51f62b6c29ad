"""The canary in a real gunicorn gevent worker: embedded, and through Redis.

A worker whose HTTP answers but whose events stopped must say so on
``/health``: Redis paused for writes (``CLIENT PAUSE ... WRITE``) leaves the
reader and ``/health`` answering while no canary gets through.
"""

from __future__ import annotations

from typing import Any

import pytest

from streaming.scaleout.redis_keys import STREAM_KEY
from tests.conftest import StartRedis, StartServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

pytestmark = pytest.mark.timeout(30)

INTERVAL = 0.2
CANARY_ENV = {"STREAM_CANARY_INTERVAL": str(INTERVAL)}


def canary_back(server: ServerProcess) -> dict[str, Any] | None:
    response = server.http.get("/health")
    body: dict[str, Any] = response.json()
    canary = body["canary"]
    if response.status_code == 200 and canary["ok"] and canary["last_seconds"] is not None:
        return body
    return None


def test_embedded_canary_is_back_fast_and_never_reaches_a_topic_star_stream(start_server: StartServer) -> None:
    server = start_server(env=CANARY_ENV)
    with SSEClient(server.port, params=[("topic", "*")]).open() as watcher:
        body = server.wait_for(lambda: canary_back(server), timeout=5)
        assert body["status"] == "healthy"
        assert body["canary"]["missed"] == 0 and body["canary"]["last_seconds"] < 0.1
        # Several canaries went by; the stream saw only what a user published.
        server.wait_for(lambda: "jobstream_canary_delivery_seconds_count 3.0" in metrics(server), timeout=5)
        server.publish("news", "hello")
        events = watcher.wait_events(1, timeout=5, event="message")
        watcher.pump(timeout=2 * INTERVAL)
        assert [(e.event, e.data) for e in watcher.events] == [("snapshot", '{"jobs":[]}'), ("message", "hello")]
        assert b"canary" not in bytes(watcher.raw)
        assert events[0].id is not None
        replay = SSEClient(server.port, params=[("topic", "*")], headers={"Last-Event-ID": "0-0"}).open()
        with replay:
            replay.pump(timeout=2 * INTERVAL)
            assert b"canary" not in bytes(replay.raw)
    assert "jobstream_events_published_total 1.0" in metrics(server)


def metrics(server: ServerProcess) -> str:
    return server.http.get("/metrics").text


def test_redis_paused_for_writes_turns_health_degraded_then_healthy_again(
    start_redis: StartRedis, start_server: StartServer
) -> None:
    redis_server = start_redis()
    server = start_server(env={**CANARY_ENV, "REDIS_URL": redis_server.url})
    body = server.wait_for(lambda: canary_back(server), timeout=5)
    assert body["broker"] == "up" and body["canary"]["last_seconds"] < 0.5
    with redis_server.client() as raw:
        assert raw.xlen(STREAM_KEY) == 0, "canaries take no place in the replay window"
        assert raw.xlen(f"{STREAM_KEY}:canary") > 0
        raw.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
        try:

            def degraded() -> dict[str, Any] | None:
                response = server.http.get("/health")
                body: dict[str, Any] = response.json()
                return body if response.status_code == 503 and body["canary"]["missed"] >= 3 else None

            # Each canary's XADD now waits out the 1 s socket timeout.
            body = server.wait_for(degraded, timeout=8)
            assert body["status"] == "degraded" and body["broker"] == "up"
            assert body["canary"]["ok"] is False
        finally:
            raw.execute_command("CLIENT", "UNPAUSE")
    body = server.wait_for(lambda: canary_back(server), timeout=5)
    assert body["status"] == "healthy" and body["canary"]["missed"] == 0
    assert "jobstream_canary_missed_total" in metrics(server)
