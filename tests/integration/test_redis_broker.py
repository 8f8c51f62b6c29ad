"""RedisBroker against a real redis-server: ids, ordered fan-out, replay rules, outages."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from streaming.core.broker import BrokerUnavailable
from streaming.core.client import Client
from streaming.core.events import Event
from streaming.core.history import ReplayGap
from streaming.core.ids import parse_id
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.core.writer import StreamWriter
from streaming.scaleout.redis_broker import DELIVERY_WAIT_SECONDS, PEER_SLACK, STREAM_KEY, RedisBroker
from tests.support.redis import RedisServer

EVERYTHING = TopicFilter()


def make_registry() -> Registry:
    return Registry(max_connections=10, send_timeout_seconds=5, keepalive_seconds=5)


def listen(registry: Registry, topics: TopicFilter = EVERYTHING) -> queue.Queue[Event]:
    q: queue.Queue[Event] = queue.Queue(maxsize=1000)
    assert registry.admit(Client(StreamWriter(q), remote_addr="10.0.0.1", user_agent="test", topics=topics)) is None
    return q


def receive(q: queue.Queue[Event], count: int, timeout: float = 5.0) -> list[Event]:
    deadline = time.monotonic() + timeout
    return [q.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(count)]


@pytest.fixture
def brokers(redis_server: RedisServer) -> Iterator[list[RedisBroker]]:
    made: list[RedisBroker] = []
    yield made
    for broker in made:
        broker.stop()


def broker_for(brokers: list[RedisBroker], server: RedisServer, history_size: int = 50) -> RedisBroker:
    broker = RedisBroker(make_registry(), server.url, history_size)
    brokers.append(broker)
    return broker


def running_broker(brokers: list[RedisBroker], server: RedisServer) -> tuple[RedisBroker, queue.Queue[Event]]:
    """A running broker with one client that listens to everything."""
    broker = broker_for(brokers, server)
    q = listen(broker.registry)
    broker.start()
    return broker, q


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


@pytest.mark.timeout(30)
def test_every_worker_reader_delivers_every_event_in_stream_order(
    redis_server: RedisServer, brokers: list[RedisBroker]
) -> None:
    a, b = broker_for(brokers, redis_server), broker_for(brokers, redis_server)
    queues = [listen(a.registry), listen(b.registry)]
    a.start()
    b.start()
    wait_until(lambda: a.last_key is not None or a._cursor is not None)
    wait_until(lambda: b._cursor is not None)
    published = [(a if i % 2 else b).publish("t", "message", str(i)) for i in range(20)]
    ids = [e.id for e in published]
    with redis_server.client() as raw:
        assert [entry_id for entry_id, _ in raw.xrange(STREAM_KEY)] == ids
    for q in queues:
        assert [e.id for e in receive(q, 20)] == ids
    assert a.last_key == b.last_key == parse_id(ids[-1])


@pytest.mark.timeout(30)
def test_replay_follows_the_history_rules(redis_server: RedisServer, brokers: list[RedisBroker]) -> None:
    broker = broker_for(brokers, redis_server, history_size=10)
    other_host = broker_for(brokers, redis_server, history_size=10)
    assert other_host.replay((0, 0), EVERYTHING) == []  # nothing published: the floor is 0-0
    events = [broker.publish(f"t/{i % 2}", "message", str(i)) for i in range(500)]
    with redis_server.client() as raw:
        info = raw.xinfo_stream(STREAM_KEY)
    first = parse_id(info["first-entry"][0])
    kept = [e for e in events if e.key >= first]  # type: ignore[operator]
    assert 100 <= len(kept) < 500  # MAXLEN ~ keeps at least the window (and the reader's slack)

    # An id in the window, from any broker: what follows it, filtered.
    assert [e.id for e in other_host.replay(kept[3].key, EVERYTHING)] == [e.id for e in kept[4:]]
    odd = other_host.replay(kept[3].key, TopicFilter(["t/1"]))
    assert [e.id for e in odd] == [e.id for e in kept[4:] if e.topic == "t/1"]
    assert other_host.replay(events[-1].key, EVERYTHING) == []
    for trimmed in (events[0].key, (0, 0)):
        with pytest.raises(ReplayGap) as gap:
            other_host.replay(trimmed, EVERYTHING)
        assert gap.value.reason == "expired"
    for never_issued in ((events[-1].key[0] + 10_000, 0), (kept[5].key[0], kept[5].key[1] + 7777)):
        with pytest.raises(ReplayGap) as gap:
            other_host.replay(never_issued, EVERYTHING)
        assert gap.value.reason == "unknown"


@pytest.mark.timeout(30)
def test_reader_resumes_after_losing_its_connection_and_skips_nothing(
    redis_server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker, q = running_broker(brokers, redis_server)
    first = broker.publish("t", "message", "before")
    assert receive(q, 1)[0].id == first.id
    with redis_server.client() as raw:
        raw.client_kill_filter(_type="normal", skipme=True)  # drops the reader mid-XREAD
        ids = [raw.xadd(STREAM_KEY, {"topic": "t", "event": "message", "data": str(i)}) for i in range(5)]
    assert [e.id for e in receive(q, 5)] == ids
    assert broker.healthy


@pytest.mark.timeout(30)
def test_a_stopped_redis_fails_publish_fast_and_the_reader_recovers(
    redis_server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker, q = running_broker(brokers, redis_server)
    before = broker.publish("t", "message", "before")
    receive(q, 1)
    redis_server.pause()
    try:
        wait_until(lambda: not broker.healthy, timeout=5)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            broker.publish("t", "message", "during")
        assert time.monotonic() - started < 0.5  # known down: refused without waiting on Redis
        with pytest.raises(BrokerUnavailable):
            broker.replay(before.key, EVERYTHING)
    finally:
        redis_server.resume()
    wait_until(lambda: broker.healthy, timeout=5)
    assert [t.name for t in threading.enumerate()].count("jobstream-redis") == 1  # the same reader, reconnected
    after = broker.publish("t", "message", "after")
    assert receive(q, 1)[0].id == after.id
    assert [e.id for e in broker.replay(before.key, EVERYTHING)] == [after.id]


@pytest.mark.timeout(30)
def test_stop_ends_the_reader_promptly(redis_server: RedisServer, brokers: list[RedisBroker]) -> None:
    broker = broker_for(brokers, redis_server)
    broker.start()
    wait_until(lambda: broker._cursor is not None)
    started = time.monotonic()
    broker.stop()
    assert not broker.running
    assert time.monotonic() - started < 1.5


class TrailingPeers:
    """Stands in for the host's other workers (streaming.scaleout.instance.DeliveryCursors):
    they have delivered nothing until ``catch_up``."""

    def __init__(self) -> None:
        self.caught_up = threading.Event()
        self.asked = threading.Event()
        self.reported: list[tuple[int, int]] = []

    def report(self, ms: int, seq: int) -> None:
        self.reported.append((ms, seq))

    def clear(self) -> None:
        self.reported.clear()

    def all_past(self, ms: int, seq: int) -> bool:
        self.asked.set()
        return self.caught_up.is_set()


@pytest.mark.timeout(30)
def test_publish_waits_for_a_trailing_worker_beyond_the_slack(
    redis_server: RedisServer, brokers: list[RedisBroker]
) -> None:
    broker, q = running_broker(brokers, redis_server)
    peers = TrailingPeers()
    broker.peers = peers
    started = time.monotonic()
    for n in range(PEER_SLACK):  # within the slack: not held
        broker.publish("t", "m", str(n))
    assert time.monotonic() - started < DELIVERY_WAIT_SECONDS / 2 and not peers.asked.is_set()
    assert peers.reported and peers.reported[-1] == receive(q, PEER_SLACK)[-1].key  # own cursor shared
    done = threading.Event()

    def publish_held() -> None:
        broker.publish("t", "m", "held")
        done.set()

    threading.Thread(target=publish_held, daemon=True).start()
    assert peers.asked.wait(5)
    assert not done.is_set()  # held while the other worker trails
    peers.caught_up.set()
    assert done.wait(5)
    assert [e.data for e in receive(q, 1)] == ["held"]


@pytest.mark.timeout(30)
def test_the_wait_for_other_workers_is_bounded(redis_server: RedisServer, brokers: list[RedisBroker]) -> None:
    broker, q = running_broker(brokers, redis_server)
    broker.peers = TrailingPeers()  # never catches up (a stuck worker)
    for n in range(PEER_SLACK):
        broker.publish("t", "m", str(n))
    started = time.monotonic()
    broker.publish("t", "m", "late")
    assert DELIVERY_WAIT_SECONDS * 0.9 <= time.monotonic() - started < DELIVERY_WAIT_SECONDS * 3
    assert receive(q, PEER_SLACK + 1)[-1].data == "late"
    broker.stop()
    assert broker.peers.reported == []  # type: ignore[attr-defined]  # a stopped reader is not waited for
