"""Writes during a graceful shutdown, against real gunicorn.

From SIGTERM until the worker exits, every write (``POST /events``,
``POST /jobs``, ``POST /jobs/<id>/cancel``) is either accepted for good or
refused with a JSON ``503`` and ``Retry-After``; never a ``500``. What was
acknowledged is still there after a restart on the same database.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

pytestmark = pytest.mark.integration

ENV = {
    # A drain that lasts (three streams closed over a second), and a history
    # that keeps every event the hammers publish.
    "STREAM_DRAIN_SECONDS": "1",
    "STREAM_HISTORY_SIZE": "100000",
    "JOBS_CONCURRENCY": "1",
}
HAMMER_SECONDS = 30.0


class Hammer(threading.Thread):
    """Sends one kind of write as fast as it can until the server process exits (bounded)."""

    def __init__(
        self, server: ServerProcess, path: Callable[[int], str], body: Callable[[int], Any], fresh: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.path, self.body = server, path, body
        # fresh: a new connection per request (Connection: close), like a
        # script without a pool; otherwise one keep-alive connection.
        self.headers = {"Connection": "close"} if fresh else {}
        self.responses: list[tuple[int, dict[str, str], Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        assert self.server.proc is not None
        deadline = time.monotonic() + HAMMER_SECONDS
        http = httpx.Client(base_url=self.server.url(), timeout=5)
        n = 0
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    response = http.post(self.path(n), json=self.body(n), headers=self.headers)
                except httpx.TransportError:
                    # The listener is closed (or the worker closed this
                    # connection): done once the process is gone.
                    try:
                        self.server.proc.wait(0.01)
                        return
                    except subprocess.TimeoutExpired:
                        continue
                n += 1
                try:
                    payload = response.json()
                except ValueError:
                    payload = response.text
                self.responses.append((response.status_code, dict(response.headers), payload))
        finally:
            http.close()

    def statuses(self) -> set[int]:
        return {status for status, _, _ in self.responses}

    def accepted(self, status: int) -> list[Any]:
        return [payload for code, _, payload in self.responses if code == status]

    def refusals(self) -> list[tuple[dict[str, str], Any]]:
        return [(headers, payload) for code, headers, payload in self.responses if code == 503]


@pytest.mark.timeout(120)
def test_writes_during_shutdown_are_refused_with_503_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "server", ENV).start()
    streams: list[SSEClient] = []
    hammers: list[Hammer] = []
    try:
        marker = first.publish("hammer", "before")
        # Pending jobs to cancel: one long job holds the only runner slot.
        blocker = first.http.post("/jobs", json={"type": "sleep", "params": {"seconds": 60}}).json()
        pending = [first.http.post("/jobs", json={"type": "sleep", "params": {"seconds": 0}}).json()["id"]]
        pending += [first.http.post("/jobs", json={"type": "sleep"}).json()["id"] for _ in range(200)]
        streams = [SSEClient(first.port, params=[("topic", "other")]).open() for _ in range(3)]
        first.wait_for(lambda: first.health()["stream"]["active_connections"] == 3)

        def event(n: int) -> dict[str, Any]:
            return {"topic": "hammer", "event": "n", "data": n}

        hammers += [
            Hammer(first, lambda n: "/events", event),
            Hammer(first, lambda n: "/events", event, fresh=True),
            Hammer(first, lambda n: "/jobs", lambda n: {"type": "sleep", "params": {"seconds": 0}}),
            Hammer(first, lambda n: "/jobs", lambda n: {"type": "sleep", "params": {"seconds": 0}}, fresh=True),
            Hammer(first, lambda n: f"/jobs/{pending[n % len(pending)]}/cancel", lambda n: {}),
        ]
        for hammer in hammers:
            hammer.start()
        first.wait_for(lambda: all(len(h.responses) >= 3 for h in hammers))
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        for hammer in hammers:
            hammer.join(10)
            assert not hammer.is_alive()
    finally:
        for hammer in hammers:
            hammer.stop.set()
        for stream in streams:
            stream.close()
        first.stop(timeout=10)

    events, events_fresh, jobs, jobs_fresh, cancels = hammers
    assert events.statuses() | events_fresh.statuses() <= {202, 503}
    assert jobs.statuses() | jobs_fresh.statuses() <= {201, 503}
    assert cancels.statuses() <= {200, 409, 503}
    refusals = [r for h in hammers for r in h.refusals()]
    assert events.refusals(), "the keep-alive publisher never saw the draining refusal"
    for headers, payload in refusals:
        assert headers["content-type"] == "application/json"
        assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1
        assert payload["error"] == "server shutting down" and payload["reason"] == "draining"

    published = [p["id"] for p in events.accepted(202) + events_fresh.accepted(202)]
    created = [p["id"] for p in jobs.accepted(201) + jobs_fresh.accepted(201)]
    cancelled = {p["id"] for p in cancels.accepted(200) if p["status"] == "cancelled"}
    assert published and created

    second = ServerProcess(tmp_path / "server", ENV).start()
    try:
        # Every acknowledged event replays after the restart, in order.
        replay = SSEClient(second.port, params=[("topic", "hammer")], headers={"Last-Event-ID": marker}).open()
        try:
            replay.wait(lambda c: len(c.of("n")) >= len(published) or c.of("reset"), timeout=20)
            assert not replay.of("reset")
            assert [e.id for e in replay.of("n")] == sorted(published, key=_key)
        finally:
            replay.close()
        for job_id in [*created, blocker["id"]]:
            assert second.http.get(f"/jobs/{job_id}").status_code == 200, job_id
        for job_id in cancelled:
            assert second.http.get(f"/jobs/{job_id}").json()["status"] == "cancelled", job_id
    finally:
        second.stop(timeout=10)


def _key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)
