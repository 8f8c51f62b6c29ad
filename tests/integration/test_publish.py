"""POST /events: accepted events, and every kind of bad input."""

from __future__ import annotations

import pytest

from streaming.core.ids import parse_id
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient, http_request

BAD = [
    ("not json", b"{nope", "application/json", 400, "not valid JSON"),
    ("array", b"[1, 2]", "application/json", 400, "JSON object"),
    ("null", b"null", "application/json", 400, "JSON object"),
    ("empty", b"", "application/json", 400, "empty"),
    ("missing topic", b'{"data": 1}', "application/json", 400, "topic"),
    ("topic not str", b'{"topic": 5, "data": 1}', "application/json", 400, "topic"),
    ("empty topic", b'{"topic": "", "data": 1}', "application/json", 400, "topic"),
    ("wildcard topic", b'{"topic": "a*", "data": 1}', "application/json", 400, "topic"),
    ("newline topic", b'{"topic": "a\\nb", "data": 1}', "application/json", 400, "topic"),
    ("event not str", b'{"topic": "a", "event": 3, "data": 1}', "application/json", 400, "event"),
    ("event newline", b'{"topic": "a", "event": "x\\ny", "data": 1}', "application/json", 400, "event"),
    ("missing data", b'{"topic": "a"}', "application/json", 400, "data"),
    ("unknown field", b'{"topic": "a", "data": 1, "extra": 2}', "application/json", 400, "extra"),
    ("NaN", b'{"topic": "a", "data": NaN}', "application/json", 400, "NaN"),
    ("not utf-8", b'{"topic": "\xff", "data": 1}', "application/json", 400, ""),
    ("form", b"topic=a&data=1", "application/x-www-form-urlencoded", 415, "Content-Type"),
    ("text", b'{"topic": "a", "data": 1}', "text/plain", 415, "Content-Type"),
    ("too big", b'{"topic": "a", "data": "' + b"x" * 70000 + b'"}', "application/json", 413, "limit"),
]


@pytest.mark.parametrize(("name", "body", "ctype", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_publish_gets_a_json_4xx(
    shared_server: ServerProcess, name: str, body: bytes, ctype: str, status: int, words: str
) -> None:
    response = shared_server.http.post("/events", content=body, headers={"Content-Type": ctype})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]


def test_oversized_chunked_body_is_413(shared_server: ServerProcess) -> None:
    chunk = b"x" * 70000
    raw = (
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n" + f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
    )
    response = http_request(shared_server.port, raw)
    assert response.status == 413


def test_publish_returns_the_id_the_stream_carries(shared_server: ServerProcess) -> None:
    with SSEClient(shared_server.port, params=[("topic", "ids")]).open() as client:
        first = shared_server.publish("ids", {"n": 1})
        second = shared_server.publish("ids", [1, "two"], event="custom")
        third = shared_server.publish("ids", None)
        events = client.wait_events(3)
    assert [e.id for e in events] == [first, second, third]
    assert [e.event for e in events] == ["message", "custom", "message"]
    assert [e.data for e in events] == ['{"n":1}', '[1,"two"]', "null"]
    keys = [parse_id(i) for i in (first, second, third)]
    assert keys == sorted(keys) and len(set(keys)) == 3  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/nope", 404), ("DELETE", "/events", 405), ("POST", "/health", 405)]
)
def test_unknown_routes_and_methods_are_json(shared_server: ServerProcess, method: str, path: str, status: int) -> None:
    response = shared_server.http.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]
