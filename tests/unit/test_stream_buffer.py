"""GeventBuffer keeps queue.Queue(maxsize)'s contract for one stream (gevent, unpatched here:
its hub and Waiter need no patching)."""

from __future__ import annotations

import queue
import time

import gevent
import pytest

from streaming.core.buffer import GeventBuffer, new_buffer
from streaming.core.events import Delivery, Event
from streaming.core.writer import CONFLATED, DROPPED, QUEUED, StreamWriter


def test_unpatched_processes_keep_the_stdlib_queue() -> None:
    buffer = new_buffer(50)
    assert isinstance(buffer, queue.Queue) and buffer.maxsize == 50


def test_it_holds_at_most_maxsize_items_in_order_and_never_blocks_a_producer() -> None:
    buffer = GeventBuffer(3)
    for item in range(3):
        buffer.put_nowait(item)
    with pytest.raises(queue.Full):
        buffer.put_nowait(3)
    assert buffer.qsize() == 3 and buffer.full()
    assert [buffer.get(), buffer.get_nowait(), buffer.get()] == [0, 1, 2]
    assert buffer.empty()
    with pytest.raises(queue.Empty):
        buffer.get_nowait()


def test_a_waiting_get_is_woken_by_a_put_and_a_timed_one_gives_up() -> None:
    buffer = GeventBuffer(50)
    waiting = gevent.spawn(buffer.get)
    gevent.sleep(0.01)
    assert not waiting.ready()
    buffer.put_nowait("a")
    buffer.put_nowait("b")
    assert waiting.get(timeout=2) == "a" and buffer.get(timeout=1) == "b"
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        buffer.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - started < 1
    buffer.put_nowait("c")  # no stale waiter is left behind by the timeout
    assert gevent.spawn(buffer.get, timeout=1).get(timeout=2) == "c"


def test_a_full_buffer_conflates_and_drops_as_the_stdlib_queue_does() -> None:
    writer = StreamWriter(GeventBuffer(2))

    def progress(n: int) -> Event:
        return Event.create(f"1-{n}", "jobs/a", "progress", str(n), Delivery(low=True, conflate="a"))

    assert [writer.offer(progress(n), 0.0, direct=False) for n in (1, 2)] == [QUEUED, QUEUED]
    assert writer.offer(progress(3), 0.0, direct=False) == CONFLATED
    assert [item.data for item in writer.queue.queue] == ["3"]
    high = [Event.create(f"1-{n}", "jobs/a", "done", str(n)) for n in (4, 5)]
    assert [writer.offer(e, 0.0, direct=False) for e in high] == [QUEUED, DROPPED]
    assert writer.gap and writer.queue.qsize() == 2
