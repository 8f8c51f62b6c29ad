"""What a client hears while a worker shuts down, in-process.

One ``event: shutdown`` shape for the farewell of an open stream and for a
stream opened while draining (soft, whatever ``STREAM_REJECT_MODE``), and a
JSON 503 with ``Retry-After`` for every write.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from httpx_sse import EventSource

from app import create_app
from server.settings import Settings
from streaming.core.broker import MemoryBroker
from streaming.core.client import Client
from streaming.core.reasons import CloseReason
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.ops.service import StreamingService
from streaming.transport.stream import StreamOptions, open_stream, shutdown_frame

SHAPE = {"reason", "retry_ms", "error", "retry_after", "active_connections", "max_connections"}


def shutdown_of(wire: bytes) -> tuple[int | None, dict[str, Any]]:
    """The ``retry`` and data of the one ``shutdown`` event in ``wire`` (httpx-sse's reading)."""
    response = httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=wire)
    events = list(EventSource(response).iter_sse())
    assert [e.event for e in events] == ["shutdown"], events
    return events[0].retry, json.loads(events[0].data)


@pytest.mark.parametrize(("retry_ms", "retry_after"), [(0, 1), (999, 1), (1000, 1), (1001, 2), (8000, 8)])
def test_the_shutdown_frame_says_when_to_come_back_in_ms_and_seconds(retry_ms: int, retry_after: int) -> None:
    retry, data = shutdown_of(shutdown_frame(retry_ms, 3, 10))
    assert retry == retry_ms
    assert data == {
        "reason": "server shutting down",
        "retry_ms": retry_ms,
        "error": "server shutting down",
        "retry_after": retry_after,
        "active_connections": 3,
        "max_connections": 10,
    }


def test_the_farewell_of_an_open_stream_is_the_shutdown_frame() -> None:
    registry = Registry(max_connections=10, send_timeout_seconds=1, keepalive_seconds=1)
    client = Client.create(10, remote_addr="127.0.0.1", user_agent="test", topics=TopicFilter(["t"]))
    assert registry.admit(client) is None
    options = StreamOptions(retry_ms=3000, clock=time.monotonic)
    body = open_stream(client, registry, MemoryBroker(registry, 10), options, None, None)
    try:
        next(body)  # the opening
        client.close(CloseReason.SHUTDOWN, 4321)
        farewell = next(body)
        with pytest.raises(StopIteration):
            next(body)
    finally:
        body.close()
    assert farewell == shutdown_frame(4321, 1, 10)
    retry, data = shutdown_of(farewell)
    assert retry == 4321 and set(data) == SHAPE and data["retry_ms"] == 4321


@pytest.fixture(params=["status", "retry"])
def draining(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    """An app in each reject mode, draining, with one job it accepted before."""
    settings = Settings(
        jobs_db=str(tmp_path / "jobs.db"),
        history_size=10,
        reject_mode=request.param,
        retry_ms=2000,
        reconnect_jitter_ms=2500,
    )
    app = create_app(settings)
    service: StreamingService = app.extensions["jobstream"]
    job = app.test_client().post("/jobs", json={"type": "sleep", "params": {"seconds": 60}}).get_json()
    service.shutdown(drain_seconds=0)  # what SIGTERM starts
    yield app, job["id"]
    service.close()


@pytest.mark.parametrize("query", ["topic=a", "topic=jobs/*&last_event_id=1-0"])
def test_a_stream_opened_while_draining_gets_a_200_with_the_shutdown_frame(
    draining: tuple[Flask, str], query: str
) -> None:
    app, _ = draining
    # Through app.wsgi_app: the fast path decides the refusal, the view words it.
    response = app.test_client().get(f"/stream?{query}")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    wire = response.get_data()
    assert re.match(rb": server shutting down\nretry: (\d+)\n", wire), wire
    retry, data = shutdown_of(wire)
    assert retry is not None and 2000 <= retry <= 2500
    assert set(data) == SHAPE and data["retry_ms"] == retry and data["reason"] == "server shutting down"
    assert data["retry_after"] == (2 if retry == 2000 else 3)
    stats = app.extensions["jobstream"].registry.stats()
    assert stats["rejected_by_reason"]["draining"] == 1 and stats["active_connections"] == 0


def test_every_write_while_draining_is_a_json_503_with_retry_after(draining: tuple[Flask, str]) -> None:
    app, job_id = draining
    client = app.test_client()
    for path, body in [
        ("/events", {"topic": "t", "data": 1}),
        ("/jobs", {"type": "sleep", "params": {"seconds": 0}}),
        (f"/jobs/{job_id}/cancel", {}),
    ]:
        response = client.post(path, json=body)
        assert response.status_code == 503, (path, response.get_data())
        assert response.headers["Retry-After"] == "2", path
        assert response.get_json() == {"error": "server shutting down", "reason": "draining", "retry_after": 2}
    listed = client.get("/jobs").get_json()["jobs"]
    assert [j["id"] for j in listed] == [job_id], "a refused job was stored"
