"""Publishing from Python code inside a worker: ``streaming.broadcast``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

import streaming
from app import create_app
from server.settings import Settings
from streaming.core.client import Client
from streaming.core.topics import TopicFilter


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = create_app(Settings(jobs_db=str(tmp_path / "jobs.db")))
    yield application
    streaming.service_of(application).close()


def test_broadcast_reaches_streams_and_history_like_a_post(app: Flask) -> None:
    svc = streaming.service_of(app)
    watcher = Client.create(10, "10.0.0.1", "t", TopicFilter(["alerts/*"]))
    assert svc.registry.admit(watcher) is None
    event_id = streaming.broadcast("alerts/disk", {"free": 3}, event="low", app=app)
    queued = watcher.writer.queue.get_nowait()
    assert (queued.id, queued.event, queued.data) == (event_id, "low", '{"free":3}')
    assert [e.id for e in svc.broker.replay((0, 0), TopicFilter())] == [event_id]
    with app.app_context():  # inside a request or app context, the app is found
        second = streaming.broadcast("alerts/disk", "ok")
    assert watcher.writer.queue.get_nowait().id == second
    assert streaming.get_connection_stats(app)["active_connections"] == 1


@pytest.mark.parametrize(
    ("topic", "event", "problem"),
    [("", "message", "topic"), ("a*", "message", "topic"), ("t", "two\nlines", "event"), ("\ud800", "m", "topic")],
)
def test_broadcast_refuses_what_post_events_refuses(app: Flask, topic: str, event: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        streaming.broadcast(topic, "x", event=event, app=app)
    assert streaming.get_connection_stats(app)["total_messages"] == 0


def test_broadcast_needs_an_app() -> None:
    with pytest.raises(RuntimeError, match="application context"):
        streaming.broadcast("t", "x")
