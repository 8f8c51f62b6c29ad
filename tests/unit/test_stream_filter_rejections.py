"""``/stream?topic=`` refuses what ``POST /events`` refuses, in-process.

NUL, CR, LF and text that is not UTF-8 (an encoded lone surrogate, a stray
byte) are a JSON 400 naming the problem, from the fast path and from the
Flask view alike; nothing is admitted. The same against gunicorn:
tests/integration/test_stream_filter_rejections.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app import create_app
from server.settings import Settings
from streaming.ops.service import StreamingService
from streaming.transport.connect import last_event_id, query_pairs
from streaming.transport.fastpath import StreamFastPath

CONTROL = "topic pattern may not contain CR, LF or NUL"
NOT_UTF8 = "topic pattern contains a lone surrogate or bytes that are not UTF-8"

# (query, the error it gets)
BAD_FILTERS = [
    ("qos=hidden", "qos must be 'foreground' or 'background', got 'hidden'"),
    ("topic=%00", CONTROL),
    ("topic=a%00b", CONTROL),
    ("topic=%0D", CONTROL),
    ("topic=%0A", CONTROL),
    ("topic=jobs%2F%0D%0A*", CONTROL),
    ("topic=ok&topic=%0A", CONTROL),
    ("topic=%ED%A0%80", NOT_UTF8),  # U+D800, a lone surrogate, as UTF-8-style bytes
    ("topic=jobs/%ED%B0%80*", NOT_UTF8),  # U+DC00
    ("topic=%FF", NOT_UTF8),
    ("topic=%C3", NOT_UTF8),  # a truncated sequence
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), history_size=10))
    yield application
    service: StreamingService = application.extensions["jobstream"]
    if service.started:
        service.shutdown(drain_seconds=0)
    service.close()


def call(wsgi: Any, query: str) -> tuple[str, dict[str, str], bytes]:
    environ = EnvironBuilder(path="/stream", query_string=query).get_environ()
    environ["REMOTE_ADDR"] = "127.0.0.1"
    body, status, headers = run_wsgi_app(wsgi, environ)
    try:
        return status, dict(headers), b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


@pytest.mark.parametrize(("query", "error"), BAD_FILTERS)
def test_a_bad_filter_is_the_same_json_400_from_the_fast_path_and_the_view(app: Flask, query: str, error: str) -> None:
    fast = app.wsgi_app
    assert isinstance(fast, StreamFastPath)
    for wsgi in (fast, fast.app):
        status, headers, body = call(wsgi, query)
        assert status == "400 BAD REQUEST", (query, body)
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"].startswith(error), body
    stats = app.extensions["jobstream"].registry.stats()
    assert stats["accepted"] == 0 and stats["active_connections"] == 0


def test_valid_utf8_in_a_filter_is_decoded_as_text() -> None:
    assert query_pairs({"QUERY_STRING": "topic=jobs%2F%C3%A9*&topic=a+b"}) == [("topic", "jobs/é*"), ("topic", "a b")]
    # A WSGI server hands raw bytes over as latin-1 (PEP 3333).
    raw = "topic=é".encode().decode("latin-1")
    assert query_pairs({"QUERY_STRING": raw}) == [("topic", "é")]
    assert query_pairs({"QUERY_STRING": b"topic=\xff".decode("latin-1")}) == [("topic", "\udcff")]


def test_a_last_event_id_that_is_not_utf8_is_kept_as_replacement_characters() -> None:
    # It is never an id the server issued: it gets a reset, whose JSON must
    # not carry lone surrogates.
    (_, value), *_ = query_pairs({"QUERY_STRING": "last_event_id=%ED%A0%80"})
    assert last_event_id({}, value) == "\ufffd\ufffd\ufffd"
    assert last_event_id({"HTTP_LAST_EVENT_ID": " 1-0 "}, value) == "1-0"
