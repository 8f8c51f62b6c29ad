"""JSON logs: the lines a stream leaves on a real server.

The log classes alone are tested in ``tests/unit/test_logs.py``.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

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
