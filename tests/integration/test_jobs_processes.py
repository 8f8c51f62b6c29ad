"""Jobs across process boundaries: kill -9, two runners on one database, the worker's
changes on the server's streams, CPU-bound handlers, and SIGTERM mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.sqlite_store import SqliteJobStore
from tests.conftest import StartServer
from tests.support.server import ROOT, TEST_ENV
from tests.support.sse import SSEClient

HANDLERS = {"JOBS_HANDLERS": "tests.support.job_handlers"}


def create(server: Any, type: str, **body: Any) -> dict[str, Any]:
    response = server.http.post("/jobs", json={"type": type, **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def status_of(server: Any, job_id: str) -> str:
    return server.http.get(f"/jobs/{job_id}").json()["status"]  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_kill_9_mid_job_loses_no_accepted_job(start_server: StartServer, tmp_path: Path) -> None:
    env = {"JOBS_DB": str(tmp_path / "durable.db"), "JOBS_CONCURRENCY": "1"}
    first = start_server(env)
    running = create(first, "sleep", params={"seconds": 60, "steps": 60})
    queued = [create(first, "sleep", params={"seconds": 0.2, "steps": 2}) for _ in range(3)]
    first.wait_for(lambda: status_of(first, running["id"]) == "in_progress")
    first.kill()

    second = start_server(env)
    interrupted = second.http.get(f"/jobs/{running['id']}").json()
    assert (interrupted["status"], interrupted["error"]) == ("error", "interrupted")
    assert interrupted["finished_at"] and interrupted["version"] == 3
    second.wait_for(lambda: all(status_of(second, j["id"]) == "completed" for j in queued), timeout=20)
    listed = {j["id"] for j in second.http.get("/jobs?limit=500").json()["jobs"]}
    assert listed == {running["id"], *(j["id"] for j in queued)}
    assert second.health()["jobs"] == {
        "total": 4, "pending": 0, "in_progress": 0, "completed": 3, "cancelled": 0, "error": 1,
    }  # fmt: skip


def start_worker(db: Path, log: Path, handlers: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
    env = {
        **os.environ, **TEST_ENV, "JOBS_DB": str(db), "JOBS_HANDLERS": handlers,
        "JOBS_CONCURRENCY": str(concurrency),
    }  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env, stdout=out, stderr=out)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for_text(path: Path, text: str, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while path.read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, path.read_text(errors="replace")[-3000:]
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_two_runner_processes_never_run_a_job_twice(tmp_path: Path, workers: list[subprocess.Popen[bytes]]) -> None:
    db, log, tally = tmp_path / "shared.db", tmp_path / "workers.log", tmp_path / "tally.txt"
    store = SqliteJobStore(str(db))
    try:
        workers += [start_worker(db, log, "tests.support.job_handlers") for _ in range(2)]
        wait_for_text(log, '"worker_started"', count=2)
        ids = [store.create("tally", f"t{i}", {"path": str(tally), "seconds": 0.02}).id for i in range(100)]
        deadline = time.monotonic() + 30
        while store.counts()["completed"] < 100:
            assert time.monotonic() < deadline, store.counts()
            time.sleep(0.1)
        runs = [line.split() for line in tally.read_text().splitlines()]
        per_job = Counter(job_id for job_id, _ in runs)
        assert sorted(per_job) == sorted(ids) and set(per_job.values()) == {1}
        pids = Counter(pid for _, pid in runs)
        assert set(pids) == {str(w.pid) for w in workers}, pids  # both took part
        raw = store._db.execute("SELECT MIN(attempts), MAX(attempts), COUNT(DISTINCT owner) FROM jobs").fetchone()
        assert tuple(raw) == (1, 1, 2)
    finally:
        store.close()
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.timeout(60)
def test_worker_process_changes_reach_the_servers_streams(
    start_server: StartServer, tmp_path: Path, workers: list[subprocess.Popen[bytes]]
) -> None:
    db = tmp_path / "feed.db"
    server = start_server({"JOBS_DB": str(db), "JOBS_HANDLERS": "tests.support.worker_handlers"})
    workers.append(start_worker(db, tmp_path / "worker.log", "tests.support.worker_handlers"))
    wait_for_text(tmp_path / "worker.log", '"worker_started"')
    with SSEClient(server.port, params=[("topic", "jobs/*")]).open() as client:
        client.wait_events(1, event="snapshot")
        job = create(server, "offsite", params={"steps": 3, "seconds": 0.9})  # worker_only: the server won't run it
        client.wait(lambda c: any(e.json()["status"] == "completed" for e in c.of("job")), timeout=10)
        seen = [e.json() for e in client.of("job") if e.json()["id"] == job["id"]]
    statuses = [j["status"] for j in seen]
    assert statuses[:2] == ["pending", "in_progress"] and statuses[-1] == "completed"
    assert [j["version"] for j in seen] == list(range(1, len(seen) + 1))  # nothing dropped
    assert seen[-1]["result"] == {"where": "worker", "pid": workers[0].pid}
    assert server.health()["jobs"]["completed"] == 1


@pytest.mark.timeout(60)
def test_streams_stay_responsive_while_four_cpu_bound_jobs_run(start_server: StartServer) -> None:
    server = start_server({**HANDLERS, "STREAM_KEEPALIVE_INTERVAL": "0.25"})
    with SSEClient(server.port, params=[("topic", "pulse")]).open() as client:
        client.wait(lambda c: c.comments.count("keepalive") >= 1)
        jobs = [create(server, "spin", params={"seconds": 20}) for _ in range(5)]
        server.wait_for(lambda: server.health()["jobs"]["in_progress"] == 4)  # JOBS_CONCURRENCY
        assert server.health()["jobs"]["pending"] == 1
        jobs, queued = jobs[:4], jobs[4]
        # Keep-alives arrive on time and a published event is delivered within 1 s.
        gaps: list[float] = []
        latencies: list[float] = []
        last = time.monotonic()
        seen_comments = len(client.comments)
        end = last + 3.0
        while time.monotonic() < end:
            client.pump(1.5)
            now = time.monotonic()
            if len(client.comments) > seen_comments:
                gaps.append(now - last)
                last, seen_comments = now, len(client.comments)
            if len(latencies) < len(gaps) // 4:
                sent, count = time.monotonic(), len(latencies)
                server.publish("pulse", {"n": count})
                client.wait(lambda c, n=count: len(c.of("message")) > n, timeout=5)
                latencies.append(time.monotonic() - sent)
                last, seen_comments = time.monotonic(), len(client.comments)
        running = [server.http.get(f"/jobs/{j['id']}").json() for j in jobs]
        assert all(j["status"] == "in_progress" and j["progress"] > 0 for j in running)  # they did work
        assert status_of(server, queued["id"]) == "pending"
        for job in [queued, *jobs]:
            server.http.post(f"/jobs/{job['id']}/cancel", json={})
        server.wait_for(lambda: server.health()["jobs"]["cancelled"] == 5)
    assert len(gaps) >= 6 and max(gaps) < 1.0, gaps
    assert latencies and max(latencies) < 1.0, latencies


@pytest.mark.timeout(60)
def test_sigterm_marks_running_jobs_interrupted_before_streams_close(start_server: StartServer) -> None:
    server = start_server(HANDLERS)
    with SSEClient(server.port, params=[("topic", "jobs/*")]).open() as client:
        polite = create(server, "sleep", params={"seconds": 60, "steps": 60})
        stubborn = create(server, "stubborn", params={"seconds": 60})  # ignores ctx.cancelled
        client.wait(lambda c: sum(e.json()["status"] == "in_progress" for e in c.of("job")) >= 2)
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        client.wait_events(1, event="shutdown", timeout=5)
        last = {e.json()["id"]: e.json() for e in client.of("job")}
    for job in (polite, stubborn):
        assert (last[job["id"]]["status"], last[job["id"]]["error"]) == ("error", "interrupted")
    assert server.wait(15) == 0
    assert time.monotonic() - stopping < 10  # a handler thread never holds the exit
