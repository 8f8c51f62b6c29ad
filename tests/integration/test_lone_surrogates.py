"""A lone surrogate in a JSON body (``"\\ud800"``: valid JSON, not valid
Unicode) is a 400 naming the field, never a 500, against real gunicorn.

The bodies are raw bytes: a JSON encoder on the client side would refuse or
mangle them before they reach the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

# (body, the field the error names); every body is otherwise valid.
EVENTS = [
    (rb'{"topic": "\ud800", "data": 1}', "topic"),
    (rb'{"topic": "jobs/\udfff", "data": 1}', "topic"),
    (rb'{"topic": "t", "event": "\ud800", "data": 1}', "event"),
    (rb'{"topic": "t", "data": "\ud800"}', "data"),
    (rb'{"topic": "t", "data": "a\udc00b"}', "data"),
    (rb'{"topic": "t", "data": {"k": "\ud800"}}', "data"),
    (rb'{"topic": "t", "data": {"\ud800": 1}}', "data"),
    (rb'{"topic": "t", "data": [1, ["\ude00"]]}', "data"),
    (rb'{"topic": "t", "data": "\ude00\ud83d"}', "data"),  # a pair in the wrong order
]
JOBS = [
    (rb'{"type": "spin", "name": "\ud800"}', "name"),
    (rb'{"type": "spin", "name": "job \udbff"}', "name"),
    (rb'{"type": "spin", "params": {"label": "\ud800"}}', "params"),
    (rb'{"type": "spin", "params": {"\ud800": 1}}', "params"),
    (rb'{"type": "spin", "params": {"nested": [{"x": "\udc00"}]}}', "params"),
    (rb'{"type": "fail", "params": {"message": "\ud800"}}', "params"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("surrogates"), env={"JOBS_HANDLERS": "tests.support.job_handlers"})
    proc.start()
    yield proc
    proc.stop(timeout=10)


def post(server: ServerProcess, path: str, body: bytes) -> httpx.Response:
    return server.http.post(path, content=body, headers={"Content-Type": "application/json"})


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("path", "body", "field"), [("/events", *e) for e in EVENTS] + [("/jobs", *j) for j in JOBS])
def test_a_lone_surrogate_is_a_400_naming_the_field(server: ServerProcess, path: str, body: bytes, field: str) -> None:
    json.loads(body)  # valid JSON, as the server's parser sees it
    response = post(server, path, body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error.startswith(f"{field} contains a lone surrogate"), error


@pytest.mark.timeout(30)
def test_nothing_refused_was_kept_and_a_proper_pair_is_fine(server: ServerProcess) -> None:
    for path, body, _ in [("/events", *e) for e in EVENTS] + [("/jobs", *j) for j in JOBS]:
        assert post(server, path, body).status_code == 400
    assert server.http.get("/jobs").json()["jobs"] == []
    # A surrogate pair is one character (U+1F600), and valid everywhere.
    published = post(
        server, "/events", rb'{"topic": "t/\ud83d\ude00", "event": "e\ud83d\ude00", "data": "\ud83d\ude00"}'
    )
    assert published.status_code == 202, published.text
    created = post(server, "/jobs", rb'{"type": "fail", "name": "\ud83d\ude00", "params": {"message": "\ud83d\ude00"}}')
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "\U0001f600" and created.json()["params"] == {"message": "\U0001f600"}


@pytest.mark.timeout(30)
def test_other_fields_with_a_lone_surrogate_are_4xx_too(server: ServerProcess) -> None:
    cases = [
        ("/jobs", rb'{"type": "\ud800"}', "unknown type"),
        ("/jobs", rb'{"type": "sleep", "\ud800": 1}', "unknown field"),
        ("/jobs", rb'{"type": "sleep", "params": {"\ud800": 1}}', "unknown params"),
        ("/events", rb'{"topic": "t", "data": 1, "\ud800": 1}', "unknown field"),
    ]
    for path, body, words in cases:
        response = post(server, path, body)
        assert response.status_code == 400, (body, response.text)
        assert words in response.json()["error"], response.text
    # The URL's share: an encoded lone surrogate in a path or query is a 4xx too.
    for method, path, status in [
        ("GET", "/jobs/%ED%A0%80", 404),
        ("POST", "/jobs/%ED%A0%80/cancel", 404),
        ("GET", "/jobs?status=%ED%A0%80", 400),
        ("GET", "/jobs?cursor=%ED%A0%80", 400),
        ("GET", "/jobs?limit=%ED%A0%80", 400),
    ]:
        response = server.http.request(method, path, headers={"X-Requested-With": "fetch"})
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json"
