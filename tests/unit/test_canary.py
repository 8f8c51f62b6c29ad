"""The canary without a server: misses, /health, and internal topics kept from users.

Time is injected (``tick(now)``, ``status(now)``), so nothing here sleeps.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import generate_latest

import streaming
from server.settings import Settings
from streaming.core.broker import BrokerUnavailable, MemoryBroker
from streaming.core.client import Client
from streaming.core.events import PUBLIC, Delivery, Event
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.core.writer import StreamWriter
from streaming.ops.canary import CANARY_TOPIC, MISSES_DEGRADED, STALL_GRACE_SECONDS, Canary
from streaming.ops.metrics import metrics_of
from streaming.ops.observers import Hooks, Observer
from streaming.ops.service import StreamingService
from tests.support.apps import app_in

INTERVAL = 2.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_registry() -> Registry:
    return Registry(max_connections=10, send_timeout_seconds=5.0, keepalive_seconds=30.0)


def stream(topics: tuple[str, ...] = ("*",)) -> Client:
    writer = StreamWriter(queue.Queue(maxsize=50), last_write=time.monotonic())
    return Client(writer, remote_addr="10.0.0.1", user_agent="t", topics=TopicFilter(topics))


class Held(MemoryBroker):
    """Accepts canaries but delivers them only on ``release``: a stuck reader."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry, history_size=100)
        self.held: list[Event] = []
        self.down = False

    def publish(self, topic: str, event: str, data: str, delivery: Delivery = PUBLIC) -> Event:
        if self.down:
            raise BrokerUnavailable("down for the test")
        if topic == CANARY_TOPIC:
            ev = Event.create("0-0", topic, event, data)
            self.held.append(ev)
            return ev
        return super().publish(topic, event, data, delivery)

    def release(self) -> None:
        held, self.held = self.held, []
        for ev in held:
            self.registry.fanout(ev)


class Recorder(Observer):
    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.missed = 0

    def canary_arrived(self, seconds: float) -> None:
        self.arrived.append(seconds)

    def canary_missed(self) -> None:
        self.missed += 1


def held_canary(clock: FakeClock) -> tuple[Canary, Held, Recorder]:
    registry = make_registry()
    broker = Held(registry)
    hooks = Hooks()
    recorder = Recorder()
    hooks.add(recorder)
    canary = Canary(broker, INTERVAL, hooks, clock)
    registry.listen_internal(canary.arrived)
    canary.begin(clock.now)
    return canary, broker, recorder


def test_a_canary_back_in_time_is_timed_and_ok() -> None:
    clock = FakeClock()
    canary, broker, recorder = held_canary(clock)
    canary.tick(clock.now)
    clock.now += 0.25
    broker.release()
    status = canary.status(clock.now)
    assert (status.ok, status.missed, status.last_seconds) == (True, 0, 0.25)
    assert recorder.arrived == [0.25] and recorder.missed == 0


def test_three_misses_in_a_row_turn_it_not_ok_and_one_back_in_time_clears_them() -> None:
    clock = FakeClock()
    canary, broker, recorder = held_canary(clock)
    for expected_missed in range(MISSES_DEGRADED):
        canary.tick(clock.now)
        clock.now += INTERVAL
        assert canary.status(clock.now).ok, "not yet three misses"
        assert canary.missed == expected_missed
    canary.tick(clock.now)  # the third canary still out: missed
    status = canary.status(clock.now)
    assert (status.ok, status.missed) == (False, MISSES_DEGRADED)
    assert recorder.missed == MISSES_DEGRADED
    # Late ones are timed (the histogram shows how late) but clear nothing...
    broker.held, newest = broker.held[:-1], broker.held[-1:]
    broker.release()
    assert not canary.status(clock.now).ok
    assert max(recorder.arrived) == pytest.approx(3 * INTERVAL)
    # ...the newest, back before the next is due, does.
    broker.held = newest
    clock.now += 0.5
    broker.release()
    status = canary.status(clock.now)
    assert (status.ok, status.missed, status.last_seconds) == (True, 0, 0.5)


def test_a_publish_that_fails_is_a_miss() -> None:
    clock = FakeClock()
    canary, broker, recorder = held_canary(clock)
    broker.down = True
    for _ in range(MISSES_DEGRADED + 1):
        canary.tick(clock.now)
        clock.now += INTERVAL
    assert canary.status(clock.now).missed == MISSES_DEGRADED == recorder.missed
    assert not canary.status(clock.now).ok


def test_ok_before_the_first_canary_is_due_and_not_ok_once_the_loop_stalls() -> None:
    clock = FakeClock()
    canary, _broker, _recorder = held_canary(clock)
    status = canary.status(clock.now)
    assert (status.ok, status.missed, status.last_seconds) == (True, 0, None)
    # No tick for MISSES_DEGRADED + 1 intervals and the grace: the loop itself is stuck.
    stuck = (MISSES_DEGRADED + 1) * INTERVAL + STALL_GRACE_SECONDS
    assert canary.status(clock.now + stuck).ok
    assert not canary.status(clock.now + stuck + 0.01).ok
    canary.tick(clock.now + stuck)
    assert canary.status(clock.now + stuck + 0.01).ok


def test_another_workers_canary_is_ignored() -> None:
    clock = FakeClock()
    canary, broker, recorder = held_canary(clock)
    canary.tick(clock.now)
    broker.registry.fanout(Event.create("1-0", CANARY_TOPIC, "canary", "someone-else:1"))
    assert recorder.arrived == [] and len(broker.held) == 1


def test_off_at_zero() -> None:
    canary = Canary(MemoryBroker(make_registry(), 10), 0.0)
    canary.start()  # starts nothing
    assert canary.status().as_json() == {"enabled": False, "ok": True, "last_seconds": None, "missed": 0}


def test_an_internal_event_reaches_no_stream_and_no_history_and_takes_no_id() -> None:
    registry = make_registry()
    broker = MemoryBroker(registry, history_size=100)
    everything, exact = stream(("*",)), stream((CANARY_TOPIC, "jobstream/*"))
    for client in (everything, exact):
        assert registry.admit(client) is None
    heard: list[Event] = []
    registry.listen_internal(heard.append)
    first = broker.publish("news", "message", "a")
    broker.publish(CANARY_TOPIC, "canary", "x:1")
    assert broker.last_key == first.key  # no id taken from the sequence
    broker.publish("news", "message", "b")
    assert len(heard) == 1
    for client in (everything, exact):
        queued = []
        while not client.writer.queue.empty():
            queued.append(client.writer.queue.get_nowait())
        assert CANARY_TOPIC not in repr(queued)
        assert b"x:1" not in b"".join(getattr(e, "wire", b"") for e in queued)
    replayed = broker.replay((0, 0), TopicFilter(["*"]))
    assert [e.data for e in replayed] == ["a", "b"]


def test_replay_never_returns_an_internal_event_even_if_one_was_stored() -> None:
    from streaming.core.history import History

    history = History(10)
    history.append(Event.create("1-0", CANARY_TOPIC, "canary", "x:1"))
    history.append(Event.create("1-1", "news", "message", "a"))
    assert [e.topic for e in history.after((0, 0), TopicFilter(["*"]))] == ["news"]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    # An hour between canaries: the loop never ticks during a test; ticks are driven by hand.
    yield from app_in(tmp_path, canary_seconds=3600.0)


@pytest.mark.parametrize("topic", [CANARY_TOPIC, "jobstream/anything"])
def test_post_events_refuses_internal_topics(app: Flask, topic: str) -> None:
    response = app.test_client().post("/events", json={"topic": topic, "data": "x"})
    assert response.status_code == 400
    assert "reserved" in response.get_json()["error"]
    with app.app_context(), pytest.raises(ValueError, match="reserved"):
        streaming.broadcast(topic, "x")


def test_a_stream_with_topic_star_refuses_nothing_but_never_gets_a_canary(app: Flask) -> None:
    svc = streaming.service_of(app)
    client = app.test_client()
    assert client.get("/health").status_code == 200  # starts the service
    watcher = stream(("*",))
    assert svc.registry.admit(watcher) is None
    svc.canary.tick(time.monotonic())
    assert watcher.writer.queue.empty()
    health = client.get("/health").get_json()
    assert health["canary"]["ok"] is True and health["canary"]["last_seconds"] is not None
    assert health["stream"]["total_messages"] == 0


def test_canaries_move_their_metrics_and_no_user_metric(app: Flask) -> None:
    svc = streaming.service_of(app)
    client = app.test_client()
    client.get("/health")
    for _ in range(3):
        svc.canary.tick(time.monotonic())
    text = generate_latest(metrics_of(app).exposed).decode()
    assert "jobstream_canary_delivery_seconds_count 3.0" in text
    assert "jobstream_canary_missed_total 0.0" in text
    assert "jobstream_events_published_total 0.0" in text
    assert "jobstream_events_delivered_total 0.0" in text
    assert "jobstream_broker_up 1.0" in text


def health_of(svc: StreamingService) -> tuple[int, dict[str, Any]]:
    app = Flask("canary-health")
    streaming.init_app(app, svc)
    response = app.test_client().get("/health")
    return response.status_code, response.get_json()


def test_health_turns_503_degraded_after_three_missed_canaries(tmp_path: Path) -> None:
    settings = Settings(jobs_db=str(tmp_path / "jobs.db"), canary_seconds=3600.0)
    registry = make_registry()
    broker = Held(registry)
    svc = StreamingService(settings, broker=broker)
    try:
        status, body = health_of(svc)
        assert status == 200 and body["status"] == "healthy"
        assert body["canary"] == {"enabled": True, "ok": True, "last_seconds": None, "missed": 0}
        # Held keeps every canary: nothing comes back.
        for _ in range(MISSES_DEGRADED + 1):
            svc.canary.tick(time.monotonic())
        status, body = health_of(svc)
        assert status == 503 and body["status"] == "degraded"
        assert body["canary"]["ok"] is False and body["canary"]["missed"] == MISSES_DEGRADED
        assert body["broker"] == "up"
    finally:
        svc.shutdown(drain_seconds=0)
        svc.close()


def test_the_loop_runs_in_a_real_thread_and_stops_at_once() -> None:
    # Unpatched here; tests/integration/test_canary_server.py runs it in a gevent worker.
    import threading

    registry = make_registry()
    broker = MemoryBroker(registry, history_size=10)
    back = threading.Event()

    class Back(Observer):
        def canary_arrived(self, seconds: float) -> None:
            back.set()

    hooks = Hooks()
    hooks.add(Back())
    canary = Canary(broker, 0.01, hooks)
    registry.listen_internal(canary.arrived)
    canary.start()
    try:
        assert back.wait(5), "no canary came back"
        assert canary.status().ok and canary.status().last_seconds is not None
    finally:
        started = time.monotonic()
        canary.stop()
        assert time.monotonic() - started < 1.0
