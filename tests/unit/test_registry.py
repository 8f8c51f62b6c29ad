"""The registry without a server: capacity, fan-out, eviction, the sweep."""

from __future__ import annotations

import gc
import queue
import threading
import weakref
from collections.abc import Callable

import pytest

from streaming.core.client import Client
from streaming.core.events import Event
from streaming.core.reasons import CloseReason, RefusalReason
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.core.writer import KEEPALIVE, WAKE, StreamWriter

CAPACITY = RefusalReason.CAPACITY
CLIENT, EVICTED, STALE = CloseReason.CLIENT, CloseReason.EVICTED, CloseReason.STALE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_registry(clock: FakeClock | None = None, **kw: object) -> Registry:
    args = {"max_connections": 10, "send_timeout_seconds": 5.0, "keepalive_seconds": 30.0, **kw}
    return Registry(clock=clock or FakeClock(), **args)  # type: ignore[arg-type]


def client(buffer: int = 50, topics: tuple[str, ...] = (), ip: str = "10.0.0.1", now: float = 1000.0) -> Client:
    writer = StreamWriter(queue.Queue(maxsize=buffer), last_write=now)
    return Client(writer, remote_addr=ip, user_agent="t", topics=TopicFilter(topics))


def event(n: int, topic: str = "t") -> Event:
    return Event.create(f"{1000 + n}-0", topic, "message", str(n))


def test_capacity_check_and_insert_are_atomic_under_threads() -> None:
    registry = make_registry(max_connections=100)
    results: list[bool] = []
    barrier = threading.Barrier(20)

    def worker() -> None:
        barrier.wait()
        for _ in range(25):
            results.append(registry.admit(client()) is None)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 100
    stats = registry.stats()
    assert stats["active_connections"] == 100 and stats["accepted"] == 100
    assert stats["rejected"] == 400 and stats["rejected_by_reason"][CAPACITY] == 400


def test_remove_is_idempotent_and_counts_once() -> None:
    registry = make_registry()
    c = client()
    assert registry.admit(c) is None
    c.writer.events_sent = 7
    assert registry.remove(c) is True
    assert registry.remove(c) is False
    stats = registry.stats()
    assert stats["active_connections"] == 0 and stats["closed_by_reason"][CLIENT] == 1
    assert stats["total_messages"] == 7


def test_fanout_respects_topics() -> None:
    registry = make_registry()
    everything, jobs, exact = client(), client(topics=("jobs/*",)), client(topics=("alerts",))
    for c in (everything, jobs, exact):
        registry.admit(c)
    registry.fanout(event(1, "jobs/a/b"))
    registry.fanout(event(2, "alerts"))
    registry.fanout(event(3, "alertsX"))
    assert everything.writer.queue.qsize() == 3
    assert [jobs.writer.queue.get_nowait().topic] == ["jobs/a/b"]
    assert exact.writer.queue.get_nowait().topic == "alerts" and exact.writer.queue.empty()


def test_full_buffer_drops_flags_a_gap_then_evicts_after_send_timeout() -> None:
    clock = FakeClock()
    registry = make_registry(clock)
    slow, fast = client(buffer=2), client(buffer=100)
    registry.admit(slow)
    registry.admit(fast)
    for n in range(3):
        registry.fanout(event(n))
    assert slow.writer.gap and slow.writer.dropped == 1 and slow.writer.full_since == clock.now
    clock.now += 5.0
    registry.fanout(event(3))
    assert slow in registry  # not yet past the timeout
    clock.now += 0.1
    registry.fanout(event(4))
    assert slow not in registry and slow.closing == EVICTED
    assert fast.writer.queue.qsize() == 5  # the slow one delayed no one
    assert registry.stats()["evicted"] == 1


def test_sweep_takes_the_time_as_an_argument() -> None:
    clock = FakeClock()
    registry = make_registry(clock)  # stale after 2*30+5 = 65 s without a write
    quiet, stuck, fine = client(), client(buffer=1), client()
    for c in (quiet, stuck, fine):
        registry.admit(c)
    registry.fanout(event(1))
    registry.fanout(event(2))  # stuck's buffer is now full
    assert registry.sweep(clock.now + 1) == []
    removed = registry.sweep(clock.now + 6)
    assert removed == [(stuck, EVICTED)]
    fine.writer.last_write = clock.now + 60
    removed = registry.sweep(clock.now + 66)
    assert removed == [(quiet, STALE)]
    assert stuck.writer.queue.get_nowait() is not None
    assert [quiet.writer.queue.get_nowait() for _ in range(3)][-1] is WAKE  # the wake-up follows the events
    assert len(registry) == 1


def test_events_sent_total_is_exact_across_removals() -> None:
    registry = make_registry(max_connections=1000)
    clients = [client() for _ in range(50)]
    for c in clients:
        registry.admit(c)
    for i, c in enumerate(clients):
        c.writer.events_sent = i
    for c in clients[:25]:
        registry.remove(c)
    assert registry.stats()["total_messages"] == sum(range(50))


def test_per_ip_limit() -> None:
    registry = make_registry(max_connections_per_ip=2)
    assert registry.admit(client(ip="1.1.1.1")) is None
    assert registry.admit(client(ip="1.1.1.1")) is None
    assert registry.admit(client(ip="1.1.1.1")) == "per_ip"
    assert registry.admit(client(ip="2.2.2.2")) is None


def test_keepalive_tick_marks_only_idle_streams() -> None:
    clock = FakeClock()
    registry = make_registry(clock)
    idle, busy, written = client(), client(), client()
    for c in (idle, busy, written):
        registry.admit(c)
    busy.writer.queue.put_nowait(event(1))  # has something to write anyway
    written.writer.last_write = clock.now + 25
    assert registry.keepalive(clock.now + 30, interval=30) == 1
    assert idle.writer.queue.get_nowait() is KEEPALIVE
    assert busy.writer.queue.qsize() == 1 and written.writer.queue.empty()
    # A second tick before the stream wrote does not pile up markers.
    registry.keepalive(clock.now + 31, interval=30)
    registry.keepalive(clock.now + 31, interval=30)
    assert idle.writer.queue.qsize() == 1


def test_direct_write_to_a_parked_stream_and_its_partial_and_full_cases() -> None:
    import socket

    reader, writer = socket.socketpair()
    try:
        writer.setblocking(False)
        registry = make_registry()
        c = client()
        c.writer.direct, c.writer.parked = writer, True
        registry.admit(c)
        small = event(1)
        assert registry.fanout(small) == 1
        assert c.writer.queue.empty() and c.writer.last_key == small.key and c.writer.events_sent == 1
        assert reader.recv(65536) == small.chunk  # one HTTP/1.1 chunk, framed once per event
        big = Event.create("1002-0", "t", "message", "x" * 4_000_000)  # more than the socket takes
        assert registry.fanout(big) == 1
        assert c.writer.pending and len(c.writer.pending) < len(big.chunk)  # the rest waits for the generator
        assert c.writer.queue.get_nowait() is WAKE and not c.writer.parked
        c.writer.parked = True  # (the generator sent the rest and parked again; the socket is still full)
        blocked = event(3)
        assert registry.fanout(blocked) == 1
        assert c.writer.queue.get_nowait() is blocked and not c.writer.parked  # queued: nothing written, order kept
    finally:
        reader.close()
        writer.close()


def test_stop_watching_runs_the_canceller_once_and_leaves_no_cycle() -> None:
    c = client()
    calls: list[Client] = []
    c.unwatch = _canceller_referring_to(c, calls)  # as the hang-up watch's does
    queue_ref = weakref.ref(c.writer.queue)
    c.stop_watching()
    c.stop_watching()
    assert len(calls) == 1 and c.unwatch is None
    calls.clear()
    enabled = gc.isenabled()
    gc.disable()
    try:
        del c
        assert queue_ref() is None  # freed by reference counting alone
    finally:
        if enabled:
            gc.enable()


def _canceller_referring_to(target: Client, calls: list[Client]) -> Callable[[], None]:
    return lambda: calls.append(target)


def test_fanout_skips_what_a_stream_already_sent() -> None:
    """With Redis a gap heal reads the stream itself and can run ahead of the
    worker's reader; the events it sent must not go out again when the reader
    fans them out, directly or through the queue."""
    import socket

    reader, writer = socket.socketpair()
    try:
        writer.setblocking(False)
        reader.setblocking(False)
        registry = make_registry()
        parked, busy = client(), client()
        parked.writer.direct, parked.writer.parked = writer, True
        for c in (parked, busy):
            registry.admit(c)
            c.writer.last_key = event(5).key  # the heal replay wrote up to event 5
        for n in (4, 5):
            assert registry.fanout(event(n)) == 0
        with pytest.raises(BlockingIOError):
            reader.recv(65536)
        assert busy.writer.queue.empty()
        newer = event(6)
        assert registry.fanout(newer) == 2
        assert reader.recv(65536) == newer.chunk and busy.writer.queue.get_nowait() is newer
    finally:
        reader.close()
        writer.close()
