"""Comment lines are sent without a blank line after them.

WHATWG dispatches nothing for a comment either way, but a blank line is an
event boundary: clients that keep the last id or ``retry`` across events
(httpx-sse, fetch-event-source) turn it into an empty ``message``. The
stream generator runs here in-process; tests/integration/test_comments_surface_no_events.py
shows the same with httpx-sse against gunicorn.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from streaming.core.broker import BrokerUnavailable, MemoryBroker
from streaming.core.client import Client
from streaming.core.events import Event, encode_comment
from streaming.core.history import Reader
from streaming.core.ids import Key
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.core.writer import KEEPALIVE as KEEPALIVE_TICK
from streaming.transport.stream import KEEPALIVE, StreamOptions, open_stream


def surfaced(wire: bytes) -> list[ServerSentEvent]:
    """What httpx-sse's public API yields for these bytes."""
    response = httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=wire)
    return list(EventSource(response).iter_sse())


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("keepalive", b": keepalive\n"),
        ("connected c7", b": connected c7\n"),
        ("two\nlines", b": two\n: lines\n"),
        ("", b":\n"),
    ],
)
def test_a_comment_is_its_lines_and_nothing_more(text: str, wire: bytes) -> None:
    assert encode_comment(text) == wire


def test_the_keepalive_is_one_comment_line() -> None:
    assert KEEPALIVE == b": keepalive\n"


def test_a_blank_line_after_a_comment_is_an_empty_message_for_httpx_sse() -> None:
    # Why comments carry no blank line: after any event with an id, httpx-sse
    # dispatches every blank line (it keeps the id, as the spec says).
    event = b"id: 1-0\nevent: job\ndata: x\n\n"
    assert [e.data for e in surfaced(event + b": keepalive\n\n")] == ["x", ""]
    assert [e.data for e in surfaced(event + KEEPALIVE)] == ["x"]


class Stream:
    """One admitted client and its generator, driven by hand."""

    def __init__(self, broker_class: type[MemoryBroker] = MemoryBroker, last_event_id: str | None = None) -> None:
        self.registry = Registry(max_connections=10, send_timeout_seconds=1, keepalive_seconds=1)
        self.broker = broker_class(self.registry, history_size=10)
        self.client = Client.create(10, remote_addr="127.0.0.1", user_agent="test", topics=TopicFilter(["t"]))
        assert self.registry.admit(self.client) is None
        options = StreamOptions(retry_ms=3000, clock=time.monotonic)
        start: Key | None = None
        self.body = open_stream(self.client, self.registry, self.broker, options, last_event_id, start)

    def close(self) -> None:
        self.body.close()


@pytest.fixture
def stream() -> Iterator[Stream]:
    s = Stream()
    yield s
    s.close()


def test_the_opening_is_retry_and_one_comment_line(stream: Stream) -> None:
    opening = next(stream.body)
    assert re.fullmatch(rb"retry: 3000\n: connected c\d+\n", opening), opening
    assert surfaced(opening) == []


def test_opening_keepalives_and_events_surface_only_the_events(stream: Stream) -> None:
    wire = next(stream.body)
    stream.client.writer.queue.put_nowait(KEEPALIVE_TICK)
    keepalive = next(stream.body)
    assert keepalive == KEEPALIVE
    wire += keepalive
    stream.broker.publish("t", "job", "one")
    wire += next(stream.body)
    for _ in range(2):
        stream.client.writer.queue.put_nowait(KEEPALIVE_TICK)
        wire += next(stream.body)
    stream.broker.publish("t", "job", "two")
    wire += next(stream.body)
    assert [(e.event, e.data) for e in surfaced(wire)] == [("job", "one"), ("job", "two")]


class DownBroker(MemoryBroker):
    def replay(self, after: Key, topics: TopicFilter, may_read: Reader | None = None) -> list[Event]:
        raise BrokerUnavailable("redis is down")


def test_the_broker_unavailable_ending_is_retry_and_one_comment_line() -> None:
    down = Stream(DownBroker, last_event_id="1-0")
    try:
        ending = next(down.body)
        assert ending == b"retry: 3000\n: broker unavailable, retry later\n"
        assert surfaced(ending) == []
        with pytest.raises(StopIteration):
            next(down.body)
    finally:
        down.close()
