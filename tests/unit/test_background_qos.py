"""Background streams without a server: low events at most once per key per
interval (``StreamWriter.space_out``), high events at once, and
``/stream?qos=background`` making such a stream. The browser's side is in
``tests/integration/test_board_background.py``."""

from __future__ import annotations

import queue

from streaming.core.client import Client
from streaming.core.events import Delivery, Event
from streaming.core.ids import format_id
from streaming.core.topics import TopicFilter
from streaming.core.writer import QUEUED, SPACED, StreamWriter
from streaming.transport.connect import background

_ids = iter(range(1, 10**9))


def ev(name: str, low: bool = False, key: str | None = None, topic: str = "jobs/a") -> Event:
    return Event.create(format_id((next(_ids), 0)), topic, "job", name, Delivery(low=low, conflate=key))


def offered(writer: StreamWriter, event: Event, now: float) -> int:
    return writer.offer(event, now, direct=False)


def test_a_background_stream_gets_one_low_event_per_key_per_interval_and_every_high_one() -> None:
    writer = StreamWriter(queue.Queue(maxsize=50))
    writer.space_out(5.0)
    assert offered(writer, ev("a 10%", low=True, key="a"), 100.0) == QUEUED
    assert offered(writer, ev("a 20%", low=True, key="a"), 101.0) == SPACED
    assert offered(writer, ev("b 10%", low=True, key="b"), 101.0) == QUEUED  # keys are independent
    assert offered(writer, ev("a done"), 102.0) == QUEUED  # high: at once
    assert offered(writer, ev("a 30%", low=True, key="a"), 104.9) == SPACED
    assert offered(writer, ev("a 40%", low=True, key="a"), 105.0) == QUEUED
    assert offered(writer, ev("log", low=True), 105.0) == QUEUED  # no key: by topic
    assert offered(writer, ev("log 2", low=True), 106.0) == SPACED
    got = [item.data for item in writer.queue.queue]
    assert got == ["a 10%", "b 10%", "a done", "a 40%", "log"]
    assert writer.dropped == 0 and not writer.gap  # spacing is not a gap to heal


def test_back_in_the_foreground_every_event_goes_again() -> None:
    writer = StreamWriter(queue.Queue(maxsize=50))
    writer.space_out(5.0)
    offered(writer, ev("1", low=True, key="a"), 0.0)
    writer.space_out(None)
    assert writer.spaced is None
    assert [offered(writer, ev(str(n), low=True, key="a"), 0.1) for n in range(3)] == [QUEUED] * 3


def test_a_background_stream_forgets_keys_past_their_interval() -> None:
    writer = StreamWriter(queue.Queue(maxsize=5000))
    writer.space_out(1.0)
    for n in range(3000):
        offered(writer, ev(str(n), low=True, key=f"k{n}"), n / 1000)
    assert writer.spaced is not None and len(writer.spaced) <= 1024 + 1


def test_qos_is_foreground_unless_asked() -> None:
    assert background([]) is False
    assert background([("qos", "background")]) is True
    assert background([("topic", "jobs/*"), ("qos", "foreground")]) is False


def test_admin_lists_a_streams_qos() -> None:
    client = Client.create(50, "10.0.0.1", "t", TopicFilter())
    assert client.info(0.0)["qos"] == "foreground"
    client.writer.space_out(5.0)
    assert client.info(0.0)["qos"] == "background"
