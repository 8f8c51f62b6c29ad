"""Priorities and conflation without a server: what a full buffer keeps
(``StreamWriter.offer``), which job changes are low priority
(``jobs.feed.delivery_of``), the ``priority``/``key`` fields of
``POST /events``, and where the conflation count shows."""

from __future__ import annotations

import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from jobs.feed import delivery_of
from streaming.core.client import Client
from streaming.core.events import Delivery, Event, check_delivery
from streaming.core.history import SqliteHistory
from streaming.core.ids import format_id
from streaming.core.topics import TopicFilter
from streaming.core.writer import CONFLATED, DROPPED, QUEUED, WAKE, StreamWriter
from streaming.scaleout.redis_entries import delivery_of as _delivery
from tests.support.apps import app_in

ROOT = Path(__file__).resolve().parents[2]
BUFFER = 5
_ids = iter(range(1, 10**9))


def ev(name: str, low: bool = False, key: str | None = None) -> Event:
    return Event.create(format_id((next(_ids), 0)), "jobs/j", "job", name, Delivery(low=low, conflate=key))


def queued(writer: StreamWriter) -> list[str]:
    return [item.data if isinstance(item, Event) else "<marker>" for item in writer.queue.queue]


def test_ten_thousand_progress_reports_to_a_reader_that_never_reads() -> None:
    writer = StreamWriter(queue.Queue(maxsize=BUFFER))
    for name in ("created", "started"):
        assert writer.offer(ev(name), 0.0, direct=False) == QUEUED
    outcomes = set()
    for n in range(10_000):
        outcomes.add(writer.offer(ev(f"progress {n}", low=True, key="j"), 1.0, direct=False))
        assert writer.queue.qsize() <= BUFFER
    assert writer.offer(ev("completed"), 2.0, direct=False) in (QUEUED, CONFLATED)
    assert outcomes == {QUEUED, CONFLATED}
    got = queued(writer)
    assert got[:2] == ["created", "started"] and got[-1] == "completed"
    assert [g for g in got if g.startswith("progress")] == ["progress 9999"]  # the newest, never a stale one
    assert writer.dropped == 0 and not writer.gap
    assert writer.conflated == 10_000 - 1  # every report but the last was replaced
    keys = [item.key for item in writer.queue.queue]
    assert keys == sorted(keys)  # ids still increase: the generator's de-duplication holds


def test_high_events_are_never_replaced_or_reordered() -> None:
    writer = StreamWriter(queue.Queue(maxsize=BUFFER))
    sent = ["a1", "b1"]
    for name in sent:
        writer.offer(ev(name), 0.0, direct=False)
    writer.offer(ev("a progress", low=True, key="a"), 0.0, direct=False)
    writer.offer(ev("b progress", low=True, key="b"), 0.0, direct=False)
    writer.offer(ev("a2"), 0.0, direct=False)  # full now
    assert writer.offer(ev("a progress 2", low=True, key="a"), 1.0, direct=False) == CONFLATED
    assert queued(writer) == ["a1", "b1", "b progress", "a2", "a progress 2"]
    # Full of high events and one low of each key: a high event finds no room.
    assert writer.offer(ev("b2"), 1.0, direct=False) == DROPPED
    assert writer.gap and writer.dropped == 1  # healed from history, as before priorities
    assert queued(writer) == ["a1", "b1", "b progress", "a2", "a progress 2"]


def test_a_full_buffer_keeps_the_newest_low_event_of_each_key_and_drops_keyless_lows() -> None:
    writer = StreamWriter(queue.Queue(maxsize=BUFFER))
    for name, key in (("x1", "x"), ("y1", "y"), ("x2", "x"), ("y2", "y")):
        writer.offer(ev(name, low=True, key=key), 0.0, direct=False)
    writer.queue.put_nowait(WAKE)
    assert writer.offer(ev("news"), 0.0, direct=False) == CONFLATED
    assert queued(writer) == ["x2", "y2", "<marker>", "news"]
    writer.offer(ev("z", low=True), 0.0, direct=False)  # no key: never conflated
    assert writer.offer(ev("z again", low=True), 0.0, direct=False) == DROPPED
    assert writer.full_since == 0.0


def test_job_changes_are_high_and_progress_is_low_keyed_by_the_job() -> None:
    job: dict[str, Any] = {"id": "j1", "status": "pending", "version": 1, "owner": None}
    assert delivery_of(job) == Delivery()
    assert delivery_of({**job, "status": "in_progress", "version": 2}) == Delivery()  # started
    assert delivery_of({**job, "status": "in_progress", "version": 3}) == Delivery(low=True, conflate="j1")
    assert delivery_of({**job, "status": "completed", "version": 9}) == Delivery()
    owned = delivery_of({**job, "status": "in_progress", "version": 4, "owner": "alice"})
    assert owned == Delivery(owner="alice", low=True, conflate="j1")
    assert delivery_of({**job, "owner": "alice"}, owners=False).owner is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"priority": "urgent"}, "priority must be 'high' or 'low', got 'urgent'"),
        ({"priority": 1}, "priority must be 'high' or 'low', got 1"),
        ({"priority": "high", "key": "j"}, "key (a conflation key) needs priority 'low'"),
        ({"key": ""}, "key must be a non-empty string of at most 200 characters"),
        ({"key": None}, "key must be a non-empty string of at most 200 characters"),
        ({"priority": None}, "priority must be 'high' or 'low', got None"),
        ({"key": 7}, "key must be a non-empty string of at most 200 characters"),
        ({"key": "k" * 201}, "key must be a non-empty string of at most 200 characters"),
        ({"key": "\ud800"}, "key"),
    ],
)
def test_bad_priority_or_key_is_a_400_naming_it(app: Flask, fields: dict[str, Any], error: str) -> None:
    answer = app.test_client().post("/events", json={"topic": "t", "data": 1, **fields})
    assert answer.status_code == 400 and error in answer.json["error"]  # type: ignore[index]


def test_a_key_alone_means_low_and_the_defaults_mean_high() -> None:
    assert check_delivery(key="j") == Delivery(low=True, conflate="j")
    assert check_delivery() == Delivery() and check_delivery(priority="low") == Delivery(low=True)
    with pytest.raises(ValueError, match="needs low priority"):
        Delivery(conflate="j")


def test_priority_and_key_survive_the_sqlite_history_and_redis_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    store = SqliteHistory(path, 10)
    store.append(ev("p", low=True, key="j"))
    store.append(ev("c"))
    store.close()
    loaded = SqliteHistory(path, 10).load().after((0, 0), TopicFilter(), None)
    assert [(e.data, e.low, e.conflate) for e in loaded] == [("p", True, "j"), ("c", False, None)]
    assert _delivery({"topic": "t", "l": "j"}) == Delivery(low=True, conflate="j")
    assert _delivery({"topic": "t", "l": ""}) == Delivery(low=True)
    assert _delivery({"topic": "t"}) == Delivery()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from app_in(tmp_path, history_size=10)


def test_published_low_events_conflate_in_a_full_stream_and_health_counts_them(app: Flask) -> None:
    http = app.test_client()
    service = app.extensions["jobstream"]
    client = service.registry
    reader = Client(StreamWriter(queue.Queue(maxsize=BUFFER)), "10.0.0.1", "t", TopicFilter(["t"]))
    assert client.admit(reader) is None
    for n in range(20):
        assert http.post("/events", json={"topic": "t", "data": n, "priority": "low", "key": "k"}).status_code == 202
    assert http.post("/events", json={"topic": "t", "data": "final"}).status_code == 202
    assert [item.data for item in reader.writer.queue.queue][-2:] == ["19", "final"]
    stream = http.get("/health").json["stream"]  # type: ignore[index]
    assert stream["conflated"] == reader.writer.conflated > 0 and stream["dropped"] == 0


GEVENT_CONFLATION = """
from gevent import monkey; monkey.patch_all()
import queue
from streaming.core.events import Delivery, Event
from streaming.core.writer import StreamWriter
writer = StreamWriter(queue.Queue(maxsize=3))
assert type(writer.queue).__module__.startswith("gevent"), type(writer.queue)
for n in range(1, 8):
    writer.offer(Event.create(f"{n}-0", "t", "m", str(n), Delivery(low=True, conflate="k")), 0.0, False)
writer.offer(Event.create("8-0", "t", "m", "high"), 0.0, False)
print([e.data for e in writer.queue.queue], writer.conflated)
"""


def test_conflation_works_on_gevents_patched_queue_too() -> None:
    # gunicorn's workers patch first: queue.Queue is then gevent's, with no mutex.
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_CONFLATION], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['7',", "'high']", "6"]
