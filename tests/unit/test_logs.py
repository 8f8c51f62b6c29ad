"""JSON logs: the log classes.

The lines a stream leaves on a real server are in ``tests/integration/test_logs_server.py``.
"""

from __future__ import annotations

import logging
import sys

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from pythonjsonlogger.json import JsonFormatter as LibraryFormatter

from server.logformat import GunicornLogger, JsonFormatter
from server.logs import FORMAT, RENAME


def test_the_formatter_writes_what_python_json_logger_writes() -> None:
    ours, library = JsonFormatter(FORMAT, rename_fields=RENAME), LibraryFormatter(FORMAT, rename_fields=RENAME)
    try:
        raise ValueError("boom")
    except ValueError:
        failure = sys.exc_info()
    records = [
        logging.LogRecord("jobstream.x", logging.INFO, __file__, 1, "hello %s", ("you",), None),
        logging.LogRecord("jobstream.x", logging.ERROR, __file__, 2, "failed", (), failure),
    ]
    records[0].__dict__.update({"event": "stream_opened", "topics": ["a"], "last_event_id": None})
    for record in records:
        assert ours.format(record) == library.format(record)


def test_access_lines_follow_the_level_of_gunicorn_access(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    monkeypatch.setattr(Logger, "access", lambda self, resp, req, environ, request_time: built.append(resp))
    logger = GunicornLogger(Config())
    access = logging.getLogger("gunicorn.access")
    level = access.level
    try:
        access.setLevel(logging.WARNING)
        logger.access("quiet", None, {}, 0)
        access.setLevel(logging.INFO)
        logger.access("logged", None, {}, 0)
    finally:
        access.setLevel(level)
    assert built == ["logged"]
