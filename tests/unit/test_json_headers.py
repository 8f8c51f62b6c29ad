"""Every JSON response carries ``nosniff`` and ``no-store``; streams keep ``no-cache``.

Against real gunicorn (the fast path's own head included):
``tests/integration/test_json_headers_server.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import streaming
from app import create_app
from server.settings import Settings

TOKEN = "t0ken"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), api_token=TOKEN, history_size=0))
    yield application
    service = streaming.service_of(application)
    if service.started:
        service.shutdown(drain_seconds=0)
    service.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
# (method, path, request keywords, expected status): successes and every kind of error.
JSON_ANSWERS: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/health", {}, 200),
    ("GET", "/jobs", {}, 200),
    ("GET", "/jobs?limit=0", {}, 400),
    ("GET", "/jobs/nope", {}, 404),
    ("GET", "/openapi.json", {}, 200),
    ("GET", "/admin/clients", {"headers": AUTH}, 200),
    ("GET", "/admin/clients", {}, 401),
    ("POST", "/events", {"headers": AUTH, "json": {"topic": "t", "data": 1}}, 202),
    ("POST", "/events", {"headers": AUTH, "json": {"topic": "t", "event": "snapshot", "data": 1}}, 400),
    ("POST", "/events", {"headers": AUTH, "data": "x"}, 415),
    ("POST", "/events", {"headers": AUTH, "data": "x" * 70000, "content_type": "application/json"}, 413),
    ("POST", "/jobs", {"headers": AUTH, "json": {"type": "sleep", "params": {"seconds": 0}}}, 201),
    ("POST", "/jobs/nope/cancel", {"headers": AUTH}, 415),
    ("DELETE", "/health", {}, 405),
    ("GET", "/no/such/route", {}, 404),
    ("GET", "/stream?topic=a%2A%2Ab%00", {}, 400),
]


@pytest.mark.parametrize(("method", "path", "kw", "status"), JSON_ANSWERS)
def test_json_answers_are_nosniff_and_no_store(
    app: Flask, method: str, path: str, kw: dict[str, Any], status: int
) -> None:
    response = app.test_client().open(path, method=method, **kw)
    assert response.status_code == status, response.get_data()
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_a_500_is_json_with_the_headers_too(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(streaming.service_of(app).registry, "stats", boom)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/health")
    assert response.status_code == 500 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


def test_streams_board_and_metrics_keep_their_own(app: Flask) -> None:
    http = app.test_client()
    # HEAD /stream goes through the Flask view (the fast path serves plain GETs).
    stream = http.head("/stream?topic=a")
    assert stream.mimetype == "text/event-stream" and stream.headers["Cache-Control"] == "no-cache"
    assert "X-Content-Type-Options" not in stream.headers
    for path in ("/", "/metrics", "/static/board.js"):
        response = http.get(path)
        assert response.status_code == 200 and response.mimetype != "application/json", path
        assert response.headers.get("Cache-Control") != "no-store", path
        response.close()
