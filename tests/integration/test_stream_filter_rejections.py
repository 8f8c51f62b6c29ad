"""``/stream?topic=`` against real gunicorn: a filter ``POST /events`` would
refuse is a JSON 400 naming the problem, never a stream and never a 500.

Each request goes twice: as a plain GET (the fast path, which hands the
400 to the view) and with an empty chunked body, which the fast path
declines, so the Flask view parses the query itself.
"""

from __future__ import annotations

import json

import pytest

from tests.support.server import ServerProcess
from tests.support.sse import http_request

pytestmark = pytest.mark.integration

CONTROL = "topic pattern may not contain CR, LF or NUL"
NOT_UTF8 = "topic pattern contains a lone surrogate or bytes that are not UTF-8"

CASES = [
    ("topic=%00", CONTROL),
    ("topic=%0D", CONTROL),
    ("topic=%0A", CONTROL),
    ("topic=ok&topic=jobs%2F%0D%0A*", CONTROL),
    ("topic=%ED%A0%80", NOT_UTF8),
    ("topic=ok&topic=%ED%A0%80*", NOT_UTF8),
    ("topic=%FF", NOT_UTF8),
]


def request(query: str, via_view: bool) -> bytes:
    extra = "Transfer-Encoding: chunked\r\n" if via_view else ""
    body = "0\r\n\r\n" if via_view else ""
    return f"GET /stream?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n{body}".encode()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("via_view", [False, True], ids=["fast-path", "view"])
@pytest.mark.parametrize(("query", "error"), CASES)
def test_a_bad_filter_is_a_json_400_naming_the_problem(
    shared_server: ServerProcess, query: str, error: str, via_view: bool
) -> None:
    response = http_request(shared_server.port, request(query, via_view))
    assert response.status == 400, response.body
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body)["error"].startswith(error)


@pytest.mark.timeout(30)
def test_publishing_to_such_a_topic_is_refused_too(shared_server: ServerProcess) -> None:
    for topic in ("a\u0000b", "a\rb", "a\nb"):
        response = shared_server.http.post("/events", json={"topic": topic, "data": 1})
        assert response.status_code == 400 and "CR, LF or NUL" in response.json()["error"]
    assert shared_server.health()["stream"]["accepted"] == 0
