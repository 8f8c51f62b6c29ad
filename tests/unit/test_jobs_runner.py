"""The runner without a server: claims, OS-thread handlers, coalescing, cancel, shutdown.

Most tests drive ``Runner.step(now)`` with an injected time; handlers run in
real threads and are released through ``threading.Event`` objects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.builtin import sleep as sleep_handler
from jobs.builtin import validate_sleep
from jobs.handlers import HandlerRegistry, JobContext
from jobs.owners import Owner
from jobs.runner import Runner
from jobs.sqlite_store import SqliteJobStore
from jobs.states import Status


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        pause.wait(0.005)
    return value


class Harness:
    def __init__(self, db: str, concurrency: int = 2) -> None:
        self.store = SqliteJobStore(db)
        self.handlers = HandlerRegistry()
        self.announced: list[dict[str, Any]] = []
        self.gate = threading.Event()
        self.runner = Runner(self.store, self.handlers, self.announced.append, concurrency=concurrency)
        self.runner.start_thread = lambda task: threading.Thread(target=task, daemon=True).start()

        @self.handlers.register("wait")
        def wait(ctx: JobContext, params: dict[str, Any]) -> Any:
            while not self.gate.is_set() and not ctx.cancelled:
                self.gate.wait(0.01)
            return {"echo": params}

        self.handlers.register("sleep", validate=validate_sleep)(sleep_handler)

    def statuses(self, job_id: str) -> list[tuple[str, int]]:
        return [(j["status"], j["version"]) for j in self.announced if j["id"] == job_id]

    def settle(self, now: float) -> None:
        """Wait for every running handler to return, then take one pass."""
        wait_until(lambda: all(r.ctx.finished for r in self.runner.running.values()))
        self.runner.step(now)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(str(tmp_path / "jobs.db"))
    yield harness
    harness.gate.set()
    harness.store.close()


def test_runs_oldest_first_within_the_concurrency_limit(h: Harness) -> None:
    ids = [h.store.create("wait", str(i), {"n": i}).id for i in range(3)]
    h.runner.step(0.0)
    assert sorted(h.runner.running) == sorted(ids[:2])
    h.gate.set()
    h.settle(1.0)  # finishes the two, claims the third
    assert list(h.runner.running) == [ids[2]]
    h.settle(2.0)
    for job_id in ids:
        assert h.statuses(job_id) == [("in_progress", 2), ("completed", 3)]
    assert h.store.get(ids[2]).result == {"echo": {"n": 2}}  # type: ignore[union-attr]


def test_the_servers_runner_leaves_worker_only_types_to_workers(h: Harness) -> None:
    h.handlers.register("crunch", worker_only=True)(lambda ctx, params: None)
    crunch = h.store.create("crunch", "c", {})
    h.runner.in_server = True
    h.runner.step(0.0)
    assert h.runner.running == {} and h.store.get(crunch.id).status is Status.PENDING  # type: ignore[union-attr]
    h.runner.in_server = False  # as in python -m jobs.worker
    h.runner.step(1.0)
    assert list(h.runner.running) == [crunch.id]
    h.settle(2.0)


def test_progress_is_coalesced_to_ten_per_second(h: Harness) -> None:
    job = h.store.create("wait", "p", {})
    h.runner.step(0.0)
    ctx = h.runner.running[job.id].ctx
    published = []
    for tick in range(30):  # 3 s of passes every 10 ms, 100 reports each
        for i in range(100):
            ctx.progress((tick * 100 + i) / 3000, f"r{i}")
        h.runner.step(tick / 100)
        published = [j for j in h.announced if j["id"] == job.id and j["status"] == "in_progress"][1:]
    assert len(published) == 3  # t = 0.0 (the first), 0.1, 0.2
    versions = [j["version"] for j in h.announced if j["id"] == job.id]
    assert versions == list(range(2, 2 + len(versions)))
    h.gate.set()
    h.settle(5.0)
    assert h.statuses(job.id)[-1][0] == "completed"


def test_cancel_from_another_process_stops_the_handler_within_a_step(h: Harness, tmp_path: Path) -> None:
    job = h.store.create("sleep", "long", {"seconds": 60, "steps": 600})
    h.runner.step(0.0)
    other = SqliteJobStore(str(tmp_path / "jobs.db"))
    try:
        other.request_cancel(job.id)
    finally:
        other.close()
    asked = time.monotonic()
    h.runner.step(1.0)  # a poll: reads the cancel flag
    h.settle(2.0)
    assert time.monotonic() - asked < 1.0  # one step is 0.1 s; the rest is scheduling slack
    final = h.store.get(job.id)
    assert final is not None and final.status is Status.CANCELLED and final.finished_at is not None


def test_a_raising_handler_ends_in_error_with_its_message(h: Harness) -> None:
    @h.handlers.register("boom")
    def boom(ctx: JobContext, params: dict[str, Any]) -> Any:
        raise ValueError("disk on fire")

    @h.handlers.register("odd")
    def odd(ctx: JobContext, params: dict[str, Any]) -> Any:
        return {1, 2}

    boom_job, odd_job = h.store.create("boom", "b", {}), h.store.create("odd", "o", {})
    h.runner.step(0.0)
    h.settle(1.0)
    assert h.store.get(boom_job.id).error == "disk on fire"  # type: ignore[union-attr]
    odd_final = h.store.get(odd_job.id)
    assert odd_final is not None and odd_final.status is Status.ERROR and "not JSON" in (odd_final.error or "")


def test_stop_marks_running_jobs_interrupted(h: Harness) -> None:
    job = h.store.create("wait", "w", {})
    h.runner.start()
    wait_until(lambda: job.id in h.runner.running)
    h.runner.stop()
    final = h.store.get(job.id)
    assert final is not None and (final.status, final.error) == (Status.ERROR, "interrupted")
    assert h.statuses(job.id)[-1] == ("error", 3)


def test_start_recovers_dead_runners_jobs_and_wakes_on_new_jobs(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobs.runner.POLL_SECONDS", 60.0)  # only wake() can make it claim soon
    here = Owner.current()
    dead = SqliteJobStore(str(tmp_path / "jobs.db"), owner=Owner(here.host, 999_999_999, "1", "gone"))
    dead.heartbeat()
    stuck = dead.create("wait", "stuck", {})
    dead.claim(["wait"])
    dead.close()
    h.gate.set()
    h.runner.start()
    try:
        assert h.statuses(stuck.id) == [("error", 3)]
        job = h.store.create("wait", "new", {})
        h.runner.wake()
        wait_until(lambda: h.store.get(job.id).status is Status.COMPLETED, timeout=10)  # type: ignore[union-attr]
    finally:
        h.runner.stop()


def test_a_job_recovered_elsewhere_is_stopped_and_never_written_again(h: Harness, tmp_path: Path) -> None:
    job = h.store.create("wait", "w", {})
    h.runner.step(0.0)
    other = SqliteJobStore(str(tmp_path / "jobs.db"))
    try:
        # What another process's recovery does when it wrongly thinks we died.
        other._db.execute(
            "UPDATE jobs SET status = 'error', error = 'interrupted', version = 3 WHERE id = ?", (job.id,)
        )
    finally:
        other.close()
    h.runner.running[job.id].ctx.progress(0.5)
    h.runner.step(1.0)  # the progress write finds the job gone: lost
    assert h.runner.running[job.id].lost and h.runner.running[job.id].ctx.cancelled
    h.settle(2.0)
    assert h.runner.running == {}
    final = h.store.get(job.id)
    assert final is not None and (final.status, final.version) == (Status.ERROR, 3)
    assert h.statuses(job.id) == [("in_progress", 2)]
