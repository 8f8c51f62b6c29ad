"""No event lost: Last-Event-ID replay, resets, healing after eviction, restarts."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from streaming.core.ids import parse_id
from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient, SSEEvent


class Publisher(threading.Thread):
    """Publishes numbered events at a steady rate until stopped (bounded)."""

    def __init__(self, server: ServerProcess, topic: str, rate: float, limit: int, size: int = 0) -> None:
        super().__init__(daemon=True)
        self.server, self.topic, self.rate, self.limit = server, topic, rate, limit
        self.padding = "x" * size
        self.ids: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url(), timeout=10) as http:
            due = time.monotonic()
            for n in range(self.limit):
                if self.halt.is_set():
                    return
                body = {"topic": self.topic, "event": "n", "data": f"{n}:{self.padding}"}
                response = http.post("/events", json=body)
                assert response.status_code == 202, response.text
                self.ids.append(response.json()["id"])
                due += 1 / self.rate
                if (delay := due - time.monotonic()) > 0:
                    self.halt.wait(delay)


def numbers(events: list[SSEEvent]) -> list[int]:
    return [int(e.data.split(":", 1)[0]) for e in events if e.event == "n"]


@pytest.mark.timeout(120)
def test_reconnecting_with_the_last_id_loses_nothing(start_server: StartServer) -> None:
    server = start_server({"STREAM_HISTORY_SIZE": "5000"})
    rng = random.Random(20261128)
    received: list[int] = []
    client = SSEClient(server.port, params=[("topic", "cut")]).open()
    publisher = Publisher(server, "cut", rate=200, limit=4000)
    publisher.start()
    try:
        for _ in range(20):
            already = len(client.of("n"))
            client.wait_events(already + rng.randint(1, 60), event="n", timeout=15)
            # Cut anywhere: possibly in the middle of an event, which is then discarded.
            client.pump(rng.random() * 0.02)
            received += numbers(client.events)
            last_id = client.last_id
            assert last_id is not None
            client.abort() if rng.random() < 0.5 else client.close()
            client = SSEClient(server.port, params=[("topic", "cut")], headers={"Last-Event-ID": last_id}).open()
        publisher.halt.set()
        publisher.join(10)
        total = len(publisher.ids)
        client.wait(lambda c: len(received) + len(numbers(c.events)) >= total, timeout=20)
        received += numbers(client.events)
    finally:
        publisher.halt.set()
        client.close()
    assert received == list(range(total))
    assert not client.of("reset")


@pytest.mark.timeout(60)
def test_replay_survives_a_server_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "restart").start()
    try:
        ids = [server.publish("r", f"{n}:", event="n") for n in range(5)]
        server.stop()
        server.start()
        after_restart = server.publish("r", "5:", event="n")
        assert all(parse_id(after_restart) > parse_id(i) for i in ids)  # type: ignore[operator]
        with SSEClient(server.port, params=[("topic", "r")], headers={"Last-Event-ID": ids[2]}).open() as client:
            events = client.wait_events(3, event="n")
            assert numbers(events) == [3, 4, 5]
            assert [e.id for e in events] == [*ids[3:], after_restart]
            assert not client.of("reset")
    finally:
        server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("last_id", "reason"),
    [("expired", "expired"), ("9999999999999-0", "unknown"), ("not-an-id", "malformed"), ("12-34-56", "malformed")],
)
def test_unusable_last_event_id_gets_reset_and_snapshot(start_server: StartServer, last_id: str, reason: str) -> None:
    server = start_server({"STREAM_HISTORY_SIZE": "10"})
    ids = [server.publish("h", n) for n in range(30)]
    if last_id == "expired":
        last_id = ids[0]
    # Via the query parameter, as a page building a new EventSource would.
    with SSEClient(server.port, params=[("topic", "h"), ("last_event_id", last_id)]).open() as client:
        reset, snapshot = client.wait_events(2)
        assert client.status == 200
        assert reset.event == "reset" and reset.json()["reason"] == reason
        assert reset.json()["last_event_id"] == last_id
        assert snapshot.event == "snapshot" and snapshot.json() == {"jobs": []}
        assert snapshot.id == ids[-1]  # resuming from here misses nothing
        new = server.publish("h", "after")
        assert client.wait_events(3)[2].id == new


@pytest.mark.timeout(30)
def test_empty_last_event_id_counts_as_none(shared_server: ServerProcess) -> None:
    with SSEClient(shared_server.port, headers={"Last-Event-ID": ""}).open() as everything:
        first = everything.wait_events(1)[0]
        assert first.event == "snapshot"  # all topics include jobs: snapshot, no reset
    with SSEClient(shared_server.port, params=[("topic", "plain"), ("last_event_id", "")]).open() as plain:
        event_id = shared_server.publish("plain", "x")
        assert [(e.event, e.id) for e in plain.wait_events(1)] == [("message", event_id)]


@pytest.mark.timeout(90)
def test_evicted_slow_consumer_reconnects_and_ends_with_every_event(start_server: StartServer) -> None:
    server = start_server({"STREAM_SEND_TIMEOUT": "1", "STREAM_CLEANUP_INTERVAL": "1", "STREAM_HISTORY_SIZE": "5000"})
    slow = SSEClient(server.port, params=[("topic", "slow")]).connect(recv_buffer=4096)
    slow.read_headers()
    publisher = Publisher(server, "slow", rate=2000, limit=1500, size=4096)
    publisher.start()
    slow.wait_events(5, event="n")  # reads a little, then stops reading
    publisher.join(60)
    server.wait_for(lambda: server.health()["stream"]["evicted"] >= 1, timeout=10)
    slow.wait_eof(timeout=30)  # drains what the kernel buffered, then EOF
    got = numbers(slow.events)
    assert len(got) < 1500
    with SSEClient(
        server.port, params=[("topic", "slow")], headers={"Last-Event-ID": slow.last_id or ""}, timeout=30
    ) as again:
        again.open()
        again.wait(lambda c: len(got) + len(numbers(c.events)) >= 1500, timeout=30)
        assert got + numbers(again.events) == list(range(1500))
    slow.close()


@pytest.mark.timeout(60)
def test_gap_from_a_full_buffer_heals_without_reconnecting(start_server: StartServer) -> None:
    # A tiny buffer, and a reader that pauses during a burst bigger than the
    # kernel's socket buffers: puts fail, and the generator replays the gap.
    server = start_server({"STREAM_CLIENT_BUFFER": "2", "STREAM_SEND_TIMEOUT": "30"})
    client = SSEClient(server.port, params=[("topic", "burst")], timeout=30).connect(recv_buffer=8192)
    try:
        client.read_headers()
        publisher = Publisher(server, "burst", rate=5000, limit=400, size=32768)
        publisher.start()
        publisher.join(60)
        assert server.health()["stream"]["dropped"] > 0  # the buffer did overflow
        client.wait(lambda c: len(numbers(c.events)) >= 400, timeout=30)
        assert numbers(client.events) == list(range(400))
        assert server.health()["stream"]["evicted"] == 0
    finally:
        client.close()
