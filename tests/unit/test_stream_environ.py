"""An admitted fast-path stream keeps only the environ fields gunicorn still reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from streaming.transport.fastpath import StreamFastPath
from streaming.transport.stream import ENVIRON_KEPT, shed_environ
from tests.support.apps import app_in


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from app_in(tmp_path, history_size=10)


def test_shedding_keeps_the_access_log_fields_and_drops_the_rest() -> None:
    environ = {key: key.lower() for key in ENVIRON_KEPT} | {"HTTP_COOKIE": "c", "wsgi.input": object()}
    shed_environ(environ)
    assert sorted(environ) == sorted(ENVIRON_KEPT)


def test_a_stream_served_by_the_fast_path_sheds_its_environ(app: Flask) -> None:
    assert isinstance(app.wsgi_app, StreamFastPath)
    environ = EnvironBuilder(path="/stream", query_string="topic=a", headers=[("User-Agent", "ua")]).get_environ()
    environ["REMOTE_ADDR"] = "127.0.0.1"
    statuses: list[str] = []
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        assert next(iter(body)).startswith(b"retry:") and statuses == ["200 OK"]
        assert set(environ) <= set(ENVIRON_KEPT) and environ["REMOTE_ADDR"] == "127.0.0.1"
    finally:
        getattr(body, "close", lambda: None)()
