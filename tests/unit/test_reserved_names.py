"""The server's own event names and the jobs topics cannot be published by anyone.

``POST /events`` (token holders included) and ``streaming.broadcast`` refuse
them; the jobs package, which publishes through ``StreamingService.publish``,
still can.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

import streaming
from app import create_app
from jobs import feed
from server.settings import Settings
from streaming.core.client import Client
from streaming.core.events import RESERVED_EVENTS
from streaming.core.topics import RESERVED_TOPIC_PREFIX, TopicFilter

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVER_EVENTS = ["snapshot", "reset", "shutdown", "overloaded", "job", "token-expired"]
RESERVED_TOPICS = ["jobs/", "jobs/abc", "jobs/abc/log", "jobs/ü"]
# Near misses stay open: names are compared exactly (EventSource's are case-sensitive)
# and a topic is reserved only under "jobs/".
ALLOWED_EVENTS = ["Snapshot", "JOB", "jobs", "snapshots", "reset2", "message", "log"]
ALLOWED_TOPICS = ["jobs", "jobsx/1", "Jobs/1", "job/1", "x/jobs/1", " jobs/1"]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), api_token=TOKEN))
    yield application
    service = streaming.service_of(application)
    if service.started:
        service.shutdown(drain_seconds=0)
    service.close()


def watch(app: Flask) -> Client:
    client = Client.create(100, "10.0.0.1", "t", TopicFilter())
    assert streaming.service_of(app).registry.admit(client) is None
    return client


def queued(client: Client) -> list[tuple[str, str]]:
    out = []
    while not client.writer.queue.empty():
        item = client.writer.queue.get_nowait()
        out.append((item.topic, item.event))
    return out


def test_the_reserved_set_is_exactly_the_servers_own_names() -> None:
    assert frozenset(SERVER_EVENTS) == RESERVED_EVENTS
    assert feed.EVENT in RESERVED_EVENTS and feed.TOPIC_PREFIX == RESERVED_TOPIC_PREFIX


def test_every_event_name_the_server_writes_is_reserved() -> None:
    # Drift check: a new ``encode(event="...")`` in the server must join the reserved set.
    written = set()
    for path in [*ROOT.glob("streaming/**/*.py"), *ROOT.glob("jobs/**/*.py"), *ROOT.glob("server/**/*.py")]:
        written.update(re.findall(r'encode\([^)]*event="([^"]+)"', path.read_text()))
    assert written and written <= RESERVED_EVENTS, written - RESERVED_EVENTS


@pytest.mark.parametrize("event", SERVER_EVENTS)
def test_post_events_refuses_a_reserved_event_name_even_with_the_token(app: Flask, event: str) -> None:
    client = watch(app)
    response = app.test_client().post("/events", json={"topic": "t", "event": event, "data": 1}, headers=AUTH)
    assert response.status_code == 400 and response.is_json
    assert response.get_json()["error"].startswith(f"event {event!r} is reserved for the server")
    assert queued(client) == [] and streaming.get_connection_stats(app)["total_messages"] == 0


@pytest.mark.parametrize("topic", RESERVED_TOPICS)
def test_post_events_refuses_a_jobs_topic_even_with_the_token(app: Flask, topic: str) -> None:
    client = watch(app)
    for event in ("message", "job"):
        response = app.test_client().post("/events", json={"topic": topic, "event": event, "data": 1}, headers=AUTH)
        assert response.status_code == 400 and response.is_json
        assert response.get_json()["error"].startswith("topics under 'jobs/' are reserved"), response.get_json()
    assert queued(client) == []


def test_without_the_token_the_guard_answers_first(app: Flask) -> None:
    response = app.test_client().post("/events", json={"topic": "jobs/1", "event": "job", "data": 1})
    assert response.status_code == 401


def test_open_server_refuses_reserved_names_too(tmp_path: Path) -> None:
    application = create_app(Settings(jobs_db=str(tmp_path / "jobs.db")))
    try:
        http = application.test_client()
        assert http.post("/events", json={"topic": "t", "event": "snapshot", "data": {"jobs": []}}).status_code == 400
        assert http.post("/events", json={"topic": "jobs/1", "data": 1}).status_code == 400
        assert http.post("/events", json={"topic": "t", "data": 1}).status_code == 202
    finally:
        streaming.service_of(application).close()


def test_near_misses_are_ordinary_names(app: Flask) -> None:
    client = watch(app)
    http = app.test_client()
    for event in ALLOWED_EVENTS:
        assert http.post("/events", json={"topic": "t", "event": event, "data": 1}, headers=AUTH).status_code == 202
    for topic in ALLOWED_TOPICS:
        assert http.post("/events", json={"topic": topic, "data": 1}, headers=AUTH).status_code == 202
    assert queued(client) == [("t", e) for e in ALLOWED_EVENTS] + [(t, "message") for t in ALLOWED_TOPICS]


@pytest.mark.parametrize(("topic", "event"), [("t", e) for e in SERVER_EVENTS] + [(t, "m") for t in RESERVED_TOPICS])
def test_broadcast_refuses_reserved_names_the_same_way(app: Flask, topic: str, event: str) -> None:
    client = watch(app)
    with pytest.raises(ValueError, match="reserved"):
        streaming.broadcast(topic, {"jobs": []}, event=event, app=app)
    assert queued(client) == []


def test_the_jobs_package_still_publishes_job_events(app: Flask) -> None:
    client = watch(app)
    created = app.test_client().post("/jobs", json={"type": "sleep", "params": {"seconds": 0}}, headers=AUTH)
    assert created.status_code == 201
    job_id = created.get_json()["id"]
    seen = queued(client)
    assert seen and seen[0] == (f"jobs/{job_id}", "job")
    # The service itself checks no names: it is the trusted, internal path.
    streaming.service_of(app).publish(f"jobs/{job_id}", "job", {"id": job_id})
    assert queued(client)[-1:] == [(f"jobs/{job_id}", "job")]
