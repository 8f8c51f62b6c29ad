"""Every client-set string field, set to every nasty string: a JSON 4xx or a success, never a 5xx.

The same table against real gunicorn: ``tests/integration/test_nasty_inputs_server.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

import streaming
from app import create_app
from server.settings import Settings
from tests.support.nasty import event_bodies, job_bodies, job_queries


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    path: Path = tmp_path_factory.mktemp("nasty")
    application = create_app(Settings(jobs_db=str(path / "jobs.db"), history_size=10))
    # A bug must come back as the 500 a client would see, not as a raised exception.
    application.config["PROPAGATE_EXCEPTIONS"] = False
    yield application
    service = streaming.service_of(application)
    if service.started:
        service.shutdown(drain_seconds=0)
    service.close()


def check(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, response.get_data()  # type: ignore[attr-defined]
    assert response.mimetype == "application/json"  # type: ignore[attr-defined]
    if status >= 400:
        assert isinstance(response.get_json()["error"], str)  # type: ignore[attr-defined]


def post(http: FlaskClient, path: str, raw: bytes) -> None:
    check(http.post(path, data=raw, content_type="application/json"))


def test_post_events_never_answers_5xx(app: Flask) -> None:
    http = app.test_client()
    for raw in event_bodies():
        post(http, "/events", raw)


def test_post_jobs_never_answers_5xx(app: Flask) -> None:
    http = app.test_client()
    for raw in job_bodies():
        post(http, "/jobs", raw)


def test_get_jobs_query_parameters_never_answer_5xx(app: Flask) -> None:
    http = app.test_client()
    for url in job_queries():
        check(http.get(url))


@pytest.mark.parametrize("value", ["¹", "٣", "\uff15", "\U0001d7d3", "0", "501", "0000010", "9" * 5000, " 5", "5 "])
def test_limit_takes_ascii_digits_only(app: Flask, value: str) -> None:
    response = app.test_client().get("/jobs", query_string={"limit": value})
    assert response.status_code == 400 and "limit must be an integer" in response.get_json()["error"]


def test_a_plain_limit_still_works(app: Flask) -> None:
    for value in ("1", "50", "500", "007"):
        assert app.test_client().get("/jobs", query_string={"limit": value}).status_code == 200
