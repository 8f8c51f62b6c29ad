"""``GET /stream`` served in front of Flask (streaming/transport/fastpath.py).

The fast path must be invisible: every request gets what the Flask view
would give it. These in-process tests run one request through the fast path
and the same request through the Flask app alone, and compare; the bytes
gunicorn sends are checked in ``tests/integration/test_fastpath_wire.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from streaming.transport.fastpath import StreamFastPath
from tests.support.apps import app_in

Result = tuple[str, dict[str, str], bytes]


def _make(tmp_path: Path, **settings: Any) -> Iterator[Flask]:
    yield from app_in(tmp_path, history_size=10, **settings)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from _make(tmp_path)


@pytest.fixture
def cors_app(tmp_path: Path) -> Iterator[Flask]:
    yield from _make(tmp_path, allowed_origins=("https://page.example",))


def _fast(app: Flask) -> StreamFastPath:
    assert isinstance(app.wsgi_app, StreamFastPath)
    return app.wsgi_app


def _call(wsgi: Any, method: str = "GET", query: str = "topic=a", headers: dict[str, str] | None = None) -> Result:
    """Status, headers and the first chunk of the body; the stream is then closed."""
    environ = EnvironBuilder(
        path="/stream", method=method, query_string=query, headers=list((headers or {}).items())
    ).get_environ()
    environ["REMOTE_ADDR"] = "127.0.0.1"
    body, status, response_headers = run_wsgi_app(wsgi, environ)
    try:
        first = next(iter(body), b"")
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return status, dict(response_headers), first


def _same(fast: Result, flask: Result) -> None:
    assert fast[0] == flask[0]
    assert fast[1] == flask[1]
    if fast[1].get("Content-Type", "").startswith("text/event-stream"):
        # The opening names a client id, which differs between the two calls.
        assert fast[2].split(b": connected")[0] == flask[2].split(b": connected")[0]
    else:
        assert fast[2] == flask[2]


def test_a_plain_stream_gets_what_the_flask_view_gives(app: Flask) -> None:
    fast = _call(_fast(app))
    _same(fast, _call(_fast(app).app))
    assert fast[0] == "200 OK"
    assert fast[1]["Content-Type"] == "text/event-stream; charset=utf-8"
    assert fast[2].startswith(b"retry: 3000\n: connected c")
    # Last-Event-ID from the header or the query: the same replay either way.
    event_id = app.extensions["jobstream"].publish("a", "m", {"n": 1}).id
    newer = app.extensions["jobstream"].publish("a", "m", {"n": 2}).id
    for kwargs in ({"headers": {"Last-Event-ID": event_id}}, {"query": f"topic=a&last_event_id={event_id}"}):
        fast = _call(_fast(app), **kwargs)  # type: ignore[arg-type]
        _same(fast, _call(_fast(app).app, **kwargs))  # type: ignore[arg-type]
        assert f"id: {newer}\n".encode() in fast[2] and f"id: {event_id}\n".encode() not in fast[2]


def test_what_the_fast_path_declines_gets_the_flask_answer(app: Flask) -> None:
    too_many = "&".join(f"topic=t{i}" for i in range(51))
    status, headers, body = _call(_fast(app), query=too_many)
    assert status == "400 BAD REQUEST" and headers["Content-Type"] == "application/json"
    assert "at most 50 topic patterns" in json.loads(body)["error"]
    status, headers, body = _call(_fast(app), method="HEAD")
    assert status == "200 OK" and headers["Content-Type"].startswith("text/event-stream") and body == b""
    assert app.extensions["jobstream"].registry.stats()["active_connections"] == 0


def test_a_refusal_is_decided_once_and_worded_by_the_view(tmp_path: Path) -> None:
    for app in _make(tmp_path, max_connections=1):
        environ = EnvironBuilder(path="/stream", query_string="topic=a").get_environ()
        environ["REMOTE_ADDR"] = "127.0.0.1"
        held, status, _ = run_wsgi_app(_fast(app), environ)
        assert status == "200 OK"
        try:
            status, headers, body = _call(_fast(app))
            assert status == "503 SERVICE UNAVAILABLE" and int(headers["Retry-After"]) >= 1
            assert json.loads(body)["error"] == "server at capacity"
            stats = app.extensions["jobstream"].registry.stats()
            assert stats["rejected"] == 1 and stats["accepted"] == 1
        finally:
            held.close()  # type: ignore[attr-defined]


def test_cors_same_origin_is_fast_and_cross_origin_gets_cors_headers(cors_app: Flask) -> None:
    fast = _call(_fast(cors_app))
    _same(fast, _call(_fast(cors_app).app))
    assert fast[1]["Vary"] == "Origin" and "Access-Control-Allow-Origin" not in fast[1]
    status, headers, _ = _call(_fast(cors_app), headers={"Origin": "https://page.example"})
    assert status == "200 OK" and headers["Access-Control-Allow-Origin"] == "https://page.example"
