"""JSON logs: the lines a stream leaves on a real server, and the log classes."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import httpx
import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from pythonjsonlogger.json import JsonFormatter as LibraryFormatter

from server.logformat import GunicornLogger, JsonFormatter
from server.logs import FORMAT, RENAME
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$")


@pytest.mark.timeout(30)
def test_a_stream_leaves_an_opened_and_a_closed_line_and_no_access_lines(shared_server: ServerProcess) -> None:
    agent = "log-test-agent/1.0"
    with SSEClient(shared_server.port, params=[("topic", "logs")], headers={"User-Agent": agent}).open() as client:
        client.wait(lambda c: c.comments)
        shared_server.publish("logs", "one")
        client.wait_events(1)
    httpx.get(f"http://127.0.0.1:{shared_server.port}/health", timeout=5)

    def mine(event: str) -> list[dict[str, Any]]:
        return [r for r in shared_server.log_records() if r.get("event") == event and r.get("client_id") == opened_id]

    opened = [
        r for r in shared_server.log_records() if r.get("event") == "stream_opened" and r.get("user_agent") == agent
    ]
    assert len(opened) == 1
    record = opened[0]
    opened_id = record["client_id"]
    assert record["ip"] == "127.0.0.1" and record["topics"] == ["logs"] and record["level"] == "INFO"
    assert record["logger"] == "jobstream.streaming" and isinstance(record["pid"], int)
    assert TIME.match(record["time"]), record["time"]
    closed = shared_server.wait_for(lambda: mine("stream_closed"))
    assert closed[0]["reason"] == "client" and closed[0]["events_sent"] == 1
    assert not [r for r in shared_server.log_records() if r.get("logger") == "gunicorn.access"]


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
