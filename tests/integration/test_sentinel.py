"""Redis Sentinel: a primary fails over under an open stream, and WAIT bounds what "acknowledged" means.

Real ``redis-server`` primary and replicas, one real sentinel and a real
gunicorn worker on ``redis+sentinel://``. The promise checked: a publish is
answered ``202`` or ``503``, and every ``202`` reaches the stream (open
throughout, or resumed with ``Last-Event-ID``), through ``SENTINEL FAILOVER``
and through ``kill -9`` of the primary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartServer
from tests.support import redis_ha
from tests.support.redis_ha import SentinelGroup
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

WAIT_TIMEOUT_MS = 300


@pytest.fixture
def sentinels(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    if not redis_ha.available():
        pytest.skip("redis-server and redis-cli are not installed (.ci/run installs them)")
    group = SentinelGroup(tmp_path / "redis", replicas=getattr(request, "param", 2))
    try:
        yield group.start()
    finally:
        group.stop()


@dataclass
class Publisher:
    """Publishes ``n`` = 0, 1, 2 ... on ``topic`` from a thread, recording every answer."""

    server: ServerProcess
    topic: str
    answers: list[tuple[float, int, str | None]] = field(default_factory=list)  # (when, status, id)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url(), timeout=5) as http:
            n = 0
            while not self._stop.is_set():
                try:
                    reply = http.post("/events", json={"topic": self.topic, "data": {"n": n}})
                    status, event_id = reply.status_code, reply.json().get("id")
                except httpx.HTTPError:
                    status, event_id = 0, None  # a dropped connection: not acknowledged either
                self.answers.append((time.monotonic(), status, event_id if status == 202 else None))
                n += 1
                self._stop.wait(0.01)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def accepted(self, since: float = 0.0) -> list[str]:
        return [event_id for when, status, event_id in self.answers if status == 202 and when >= since and event_id]


def read_until(stream: SSEClient, port: int, topic: str, last: str, timeout: float = 15.0) -> list[str]:
    """Every event id on ``topic`` up to ``last``; a stream that ends is resumed with ``Last-Event-ID``."""
    deadline = time.monotonic() + timeout
    ids: list[str] = []
    while time.monotonic() < deadline:
        stream.pump(0.2)
        seen = [e.id for e in stream.events if e.id is not None and e.event == "message"]
        if last in seen:
            return ids + seen
        if stream.eof:
            ids += seen
            stream.close()
            resume = ids[-1] if ids else None
            stream = SSEClient(port, params=[("topic", topic)], headers={"Last-Event-ID": resume} if resume else {})
            stream.open()
    raise AssertionError(f"{last} not delivered within {timeout} s; got {len(ids)} events")


def failover_under_stream(server: ServerProcess, group: SentinelGroup, fault: str) -> None:
    topic = f"ha/{fault}"
    stream = SSEClient(server.port, params=[("topic", topic)], timeout=10).open()
    try:
        before = [server.publish(topic, {"before": i}) for i in range(5)]
        stream.wait_events(5)
        publisher = Publisher(server, topic).start()
        old = group.master_address()
        if fault == "failover":
            group.failover()
        else:
            group.node_at(old).kill()
        group.wait_failover(old, replicas=1)
        promoted = time.monotonic()
        # Publishes are accepted again, through the new primary.
        server.wait_for(lambda: len(publisher.accepted(since=promoted)) >= 5, timeout=15)
        publisher.stop()
        last = server.publish(topic, {"last": True})
        delivered = read_until(stream, server.port, topic, last)
    finally:
        stream.close()
    statuses = {status for _, status, _ in publisher.answers}
    assert statuses <= {202, 503}, publisher.answers  # answered, never a 500 or a hang
    acknowledged = [*before, *publisher.accepted(), last]
    missing = set(acknowledged) - set(delivered)
    assert not missing, f"acknowledged and never delivered: {sorted(missing)}"
    assert delivered == sorted(set(delivered), key=lambda i: tuple(map(int, i.split("-"))))  # in order, once each


@pytest.mark.timeout(45)
@pytest.mark.parametrize("fault", ["failover", "kill-9"])
def test_every_acknowledged_publish_reaches_the_stream_across_a_failover(
    sentinels: SentinelGroup, start_server: StartServer, fault: str
) -> None:
    server = start_server({"REDIS_URL": sentinels.url, "REDIS_WAIT_TIMEOUT_MS": str(WAIT_TIMEOUT_MS)})
    assert server.health()["status"] == "healthy"
    failover_under_stream(server, sentinels, fault)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("sentinels", [1], indirect=True)
def test_a_write_no_replica_confirms_is_a_503_within_the_wait_bound(
    sentinels: SentinelGroup, start_server: StartServer
) -> None:
    server = start_server({"REDIS_URL": sentinels.url, "REDIS_WAIT_TIMEOUT_MS": str(WAIT_TIMEOUT_MS)})
    assert server.http.post("/events", json={"topic": "w", "data": 1}).status_code == 202
    (replica,) = sentinels.replicas()
    assert replica.proc is not None
    replica.proc.send_signal(19)  # SIGSTOP: connected, acknowledging nothing
    try:
        started = time.monotonic()
        refused = server.http.post("/events", json={"topic": "w", "data": 2})
        took = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert "replicas confirmed" in refused.json()["error"]
        assert refused.headers["Retry-After"]
        assert WAIT_TIMEOUT_MS / 1000 <= took < WAIT_TIMEOUT_MS / 1000 + 1.0
        job = server.http.post("/jobs", json={"type": "sleep", "params": {"seconds": 0}})
        assert job.status_code == 503, job.text
    finally:
        replica.proc.send_signal(18)  # SIGCONT
    assert server.http.get("/jobs").json()["jobs"] == []  # the refused create was taken back
    # The replica catches up and confirms again.
    server.wait_for(lambda: server.http.post("/events", json={"topic": "w", "data": 3}).status_code == 202, 10)
    assert server.http.post("/jobs", json={"type": "sleep", "params": {"seconds": 0}}).status_code == 201
