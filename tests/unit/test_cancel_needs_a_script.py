"""``POST /jobs/<id>/cancel`` takes no cross-site form post.

With no ``API_TOKEN`` nothing else stops a foreign page from posting a
``<form>`` here; the route wants what only a script can send: a JSON content
type, or ``X-Requested-With`` with no body. The board's own request is in
``tests/integration/test_board_page.py`` (it clicks Cancel).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import streaming
from app import create_app
from server.settings import Settings


def make_app(tmp_path: Path, **settings: Any) -> Flask:
    return create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), history_size=0, **settings))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = make_app(tmp_path)
    yield application
    service = streaming.service_of(application)
    if service.started:
        service.shutdown(drain_seconds=0)
    service.close()


@pytest.fixture
def pending(app: Flask) -> Iterator[tuple[FlaskClient, str]]:
    """A job that stays pending: this process's runner claims nothing meanwhile."""
    http = app.test_client()
    with app.extensions["jobs"].runner.holding_claims():
        job_id = app.extensions["jobs"].store.create("sleep", "s", {"seconds": 60}).id
        yield http, job_id


# What a foreign page can send without a CORS preflight (a <form>, or a "simple" fetch).
CROSS_SITE = [
    {"data": {"x": "1"}},  # application/x-www-form-urlencoded
    {"data": {"x": "1"}, "content_type": "multipart/form-data"},
    {"data": '{"a": "="}', "content_type": "text/plain"},  # <form enctype="text/plain">
    {},  # no body, no type, no header
    {"data": "", "content_type": "text/plain"},
]
# Not cross-site, but not what the route takes either.
WRONG = [
    ({"data": {"x": "1"}, "headers": {"X-Requested-With": "fetch"}}, 415),  # the header needs no body
    ({"headers": {"X-Requested-With": "  "}}, 415),
    ({"data": "x", "content_type": "application/xml"}, 415),
    ({"json": {"reason": "x"}}, 400),  # the cancel takes no fields
    ({"json": []}, 400),
    ({"json": None, "data": "{", "content_type": "application/json"}, 400),
    ({"data": " ", "content_type": "application/json"}, 400),
]
SCRIPT = [
    {"json": {}},  # what static/board.js sends
    {"data": "", "content_type": "application/json"},
    {"data": "{}", "content_type": "application/merge-patch+json"},
    {"headers": {"X-Requested-With": "XMLHttpRequest"}},
    {"headers": {"X-Requested-With": "fetch"}, "content_type": "text/plain"},  # a type, but no body
]


def status_of(http: FlaskClient, job_id: str) -> str:
    return str(http.get(f"/jobs/{job_id}").get_json()["status"])


@pytest.mark.parametrize("request_kw", CROSS_SITE)
def test_a_cross_site_form_cannot_cancel(pending: tuple[FlaskClient, str], request_kw: dict[str, Any]) -> None:
    http, job_id = pending
    response = http.post(f"/jobs/{job_id}/cancel", **request_kw)
    assert response.status_code == 415 and response.is_json
    assert "application/json" in response.get_json()["error"] and "X-Requested-With" in response.get_json()["error"]
    assert status_of(http, job_id) == "pending"


@pytest.mark.parametrize(("request_kw", "status"), WRONG)
def test_other_bodies_are_refused_and_cancel_nothing(
    pending: tuple[FlaskClient, str], request_kw: dict[str, Any], status: int
) -> None:
    http, job_id = pending
    response = http.post(f"/jobs/{job_id}/cancel", **request_kw)
    assert response.status_code == status and response.is_json, response.get_data()
    assert status_of(http, job_id) == "pending"


@pytest.mark.parametrize("request_kw", SCRIPT)
def test_a_script_can_cancel(pending: tuple[FlaskClient, str], request_kw: dict[str, Any]) -> None:
    http, job_id = pending
    response = http.post(f"/jobs/{job_id}/cancel", **request_kw)
    assert response.status_code == 200, response.get_data()
    assert response.get_json()["status"] == "cancelled" and status_of(http, job_id) == "cancelled"


def test_the_check_comes_before_the_lookup_and_after_the_token(tmp_path: Path) -> None:
    app = make_app(tmp_path, api_token="t0ken")
    try:
        http = app.test_client()
        assert http.post("/jobs/nope/cancel").status_code == 401  # the guard answers first
        auth = {"Authorization": "Bearer t0ken"}
        assert http.post("/jobs/nope/cancel", headers=auth).status_code == 415  # a token is no excuse
        assert http.post("/jobs/nope/cancel", headers=auth, json={}).status_code == 404
    finally:
        streaming.service_of(app).close()


def test_an_allowed_origin_may_send_the_header(tmp_path: Path) -> None:
    app = make_app(tmp_path, allowed_origins=("https://app.example",))
    try:
        preflight = app.test_client().options(
            "/jobs/x/cancel",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-requested-with",
            },
        )
        assert preflight.status_code == 204
        assert "X-Requested-With" in preflight.headers["Access-Control-Allow-Headers"]
    finally:
        streaming.service_of(app).close()
