"""SSE framing: the bytes a real server sends for the framing table.

The encoder alone is tested in ``tests/unit/test_encoding.py``.
"""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import connect_sse

from tests.support.framing import FRAMING
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient


@pytest.mark.timeout(30)
def test_framing_table_over_a_real_server(shared_server: ServerProcess) -> None:
    topic = "framing"
    with SSEClient(shared_server.port, params=[("topic", topic)]) as raw:
        raw.open()
        raw.wait(lambda c: c.comments)  # subscribed
        ids = [shared_server.publish(topic, data, event="frame") for _, data, _, _ in FRAMING]
        events = raw.wait_events(len(FRAMING), event="frame")
    for (name, _, wire, dispatched), event, event_id in zip(FRAMING, events, ids, strict=True):
        assert event.data == dispatched, name
        assert event.id == event_id
        assert f"id: {event_id}\nevent: frame\n".encode() + wire + b"\n" in bytes(raw.raw), name
    assert [e.event for e in raw.events] == ["frame"] * len(FRAMING)  # the injection made no event


@pytest.mark.timeout(30)
def test_framing_read_back_by_httpx_sse(shared_server: ServerProcess) -> None:
    topic = "framing-httpx"
    with (
        httpx.Client(timeout=10) as http,
        connect_sse(http, "GET", shared_server.url(f"/stream?topic={topic}")) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for _, data, _, _ in FRAMING:
            shared_server.publish(topic, data, event="frame")
        received = []
        for sse in source.iter_sse():
            if sse.event != "frame":
                continue  # httpx-sse also reports the opening retry: as an empty event
            received.append(sse)
            if len(received) == len(FRAMING):
                break
    assert [e.data for e in received] == [f[3] for f in FRAMING]
    assert {e.event for e in received} == {"frame"}
