"""SqliteJobStore without a server: versions, cursors, atomic claims, counts, recovery, the feed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.owners import Owner, _process_start, is_alive
from jobs.sqlite_store import SqliteJobStore
from jobs.states import InvalidTransition, Status
from jobs.store import InvalidCursor, JobNotFound, Selection


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "sub" / "jobs.db")


@pytest.fixture
def store(db: str) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(db)
    yield s
    s.close()


def test_create_then_every_change_bumps_version(store: SqliteJobStore) -> None:
    job = store.create("sleep", "nap", {"seconds": 1})
    assert (job.status, job.version, job.progress, job.started_at) == (Status.PENDING, 1, 0.0, None)
    assert store.get(job.id) == job
    claimed = store.claim(["sleep"])
    assert claimed is not None and claimed.id == job.id
    assert (claimed.status, claimed.version) == (Status.IN_PROGRESS, 2) and claimed.started_at is not None
    moved = store.progress(job.id, 0.5, "half")
    assert moved is not None and (moved.progress, moved.message, moved.version) == (0.5, "half", 3)
    done = store.finish(job.id, Status.COMPLETED, result={"ok": [1]}, progress=1.0)
    assert done is not None and (done.status, done.result, done.version) == (Status.COMPLETED, {"ok": [1]}, 4)
    assert done.message == "half" and done.finished_at is not None
    assert done.updated_at >= done.created_at
    assert store.get("missing") is None


def test_invalid_transitions_raise_and_change_nothing(store: SqliteJobStore) -> None:
    job = store.create("sleep", "nap", {})
    with pytest.raises(InvalidTransition):
        store.finish(job.id, Status.PENDING)
    assert store.finish(job.id, Status.COMPLETED) is None  # not in progress: nothing written
    assert store.get(job.id) == job


def test_cancel_pending_at_once_running_by_flag_terminal_409(store: SqliteJobStore) -> None:
    pending = store.create("sleep", "a", {})
    cancelled = store.request_cancel(pending.id)
    assert (cancelled.status, cancelled.version) == (Status.CANCELLED, 2) and cancelled.finished_at
    running = store.create("sleep", "b", {})
    assert store.claim(["sleep"]) is not None
    flagged = store.request_cancel(running.id)
    assert flagged.status is Status.IN_PROGRESS and flagged.version == 2
    assert store.cancel_requested([running.id, pending.id]) == {running.id}
    with pytest.raises(InvalidTransition):
        store.request_cancel(pending.id)
    with pytest.raises(JobNotFound):
        store.request_cancel("nope")


def test_claim_takes_oldest_of_known_types_only(store: SqliteJobStore) -> None:
    first = store.create("other", "x", {})
    second = store.create("sleep", "y", {})
    third = store.create("sleep", "z", {})
    claimed = [store.claim(["sleep"]), store.claim(["sleep"]), store.claim(["sleep"])]
    assert [j.id if j else None for j in claimed] == [second.id, third.id, None]
    assert store.get(first.id).status is Status.PENDING  # type: ignore[union-attr]


def test_pages_newest_first_with_opaque_cursor_and_status(store: SqliteJobStore) -> None:
    ids = [store.create("sleep", str(i), {}).id for i in range(7)]
    store.request_cancel(ids[1])
    seen, cursor = [], None
    while True:
        page = store.page(limit=3, cursor=cursor)
        seen += [j.id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
        assert "seq" not in cursor and not cursor.isdigit()
    assert seen == ids[::-1]
    assert [j.id for j in store.page(Status.CANCELLED).jobs] == [ids[1]]
    for bad in ("garbage", "!!", "ajE6eA"):  # the last decodes to "j1:x"
        with pytest.raises(InvalidCursor):
            store.page(cursor=bad)


def test_newest_selects_by_id_and_prefix(store: SqliteJobStore) -> None:
    jobs = [store.create("sleep", str(i), {}) for i in range(5)]
    assert [j.id for j in store.newest(Selection(everything=True), 3)] == [j.id for j in jobs[:1:-1]]
    assert [j.id for j in store.newest(Selection(ids=[jobs[1].id, "zz"]))] == [jobs[1].id]
    prefix = jobs[3].id[:10]
    assert jobs[3].id in [j.id for j in store.newest(Selection(id_prefixes=[prefix]))]
    assert store.newest(Selection()) == []


def test_counts_follow_every_status_change_without_scanning(store: SqliteJobStore, db: str) -> None:
    a, b, c = (store.create("sleep", n, {}) for n in "abc")
    store.claim(["sleep"])
    store.request_cancel(b.id)
    store.finish(a.id, Status.ERROR, error="boom")
    assert store.counts() == {"total": 3, "pending": 1, "in_progress": 0, "completed": 0, "cancelled": 1, "error": 1}
    assert store.withdraw(c.id) and not store.withdraw(a.id)
    assert store.counts()["total"] == 2 and store.counts()["pending"] == 0
    plan = sqlite3.connect(db).execute("EXPLAIN QUERY PLAN SELECT status, n FROM job_counts").fetchall()
    assert "jobs " not in " ".join(str(row) for row in plan)


def test_counts_stay_cheap_at_100k_jobs(store: SqliteJobStore, db: str) -> None:
    raw = sqlite3.connect(db)
    raw.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)"
        " INSERT INTO jobs (id, type, name, params, status, progress, created_at, updated_at, version)"
        " SELECT 'bulk' || i, 'sleep', 'bulk', '{}', CASE i % 3 WHEN 0 THEN 'completed' ELSE 'pending' END,"
        " 0, i, i, 1 FROM n"
    )
    raw.commit()
    raw.close()
    started = time.perf_counter()
    for _ in range(100):
        counts = store.counts()
    assert (time.perf_counter() - started) / 100 < 0.005
    assert counts["total"] == 100_000 and counts["completed"] == 33_333


def test_concurrent_claims_from_many_connections_never_share_a_job(db: str) -> None:
    stores = [SqliteJobStore(db) for _ in range(4)]
    try:
        for i in range(200):
            stores[0].create("sleep", str(i), {})
        taken: list[list[str]] = [[] for _ in stores]

        def drain(index: int) -> None:
            while (job := stores[index].claim(["sleep"])) is not None:
                taken[index].append(job.id)

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(stores))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        everything = [j for part in taken for j in part]
        assert len(everything) == 200 == len(set(everything))
        attempts = sqlite3.connect(db).execute("SELECT MAX(attempts), MIN(attempts) FROM jobs").fetchone()
        assert attempts == (1, 1)
    finally:
        for s in stores:
            s.close()


def test_one_store_is_safe_to_share_between_threads(store: SqliteJobStore) -> None:
    def work() -> None:
        for i in range(50):
            job = store.create("sleep", str(i), {})
            store.get(job.id)
            store.counts()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert store.counts()["pending"] == 400 == len(store.page(limit=500).jobs)


def test_recovery_interrupts_only_jobs_of_dead_runners(db: str) -> None:
    here = Owner.current()
    dead = SqliteJobStore(db, owner=Owner(here.host, 999_999_999, "1", "dead"))  # no such pid
    alive = SqliteJobStore(db)  # this process: alive
    fresh = SqliteJobStore(db)
    try:
        for s in (dead, alive):
            s.heartbeat()
            s.create("sleep", "j", {})
            assert s.claim(["sleep"]) is not None
        recovered = fresh.recover_interrupted()
        assert [(j.status, j.error) for j in recovered] == [(Status.ERROR, "interrupted")]
        assert recovered[0].finished_at is not None
        assert fresh.counts()["in_progress"] == 1
        assert fresh.recover_interrupted() == []
        released = alive.release()
        assert [j.error for j in released] == ["interrupted"] and fresh.counts()["in_progress"] == 0
    finally:
        for s in (dead, alive, fresh):
            s.close()


def test_change_feed_shows_other_writers_in_order(db: str) -> None:
    server, worker = SqliteJobStore(db), SqliteJobStore(db)
    try:
        start = server.last_change()
        mine = server.create("sleep", "mine", {})
        theirs = worker.create("offsite", "theirs", {})
        worker.claim(["offsite"])
        worker.progress(theirs.id, 0.5, None)
        changes, position = server.changes(start)
        assert [(c["id"], c["status"], c["version"]) for c in changes] == [
            (theirs.id, "pending", 1),
            (theirs.id, "in_progress", 2),
            (theirs.id, "in_progress", 3),
        ]
        assert mine.id not in {c["id"] for c in changes}
        assert server.changes(position) == ([], position)
    finally:
        server.close()
        worker.close()


def test_a_killed_but_unreaped_runner_counts_as_dead() -> None:
    here = Owner.current()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = str(Owner(here.host, proc.pid, _process_start(proc.pid) or "?", "x"))
        now = int(time.time() * 1000)
        assert is_alive(owner, now, now, here)
        proc.kill()
        deadline = time.monotonic() + 5
        while _process_start(proc.pid) is not None:  # a zombie until we reap it below
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not is_alive(owner, now, now, here)
        assert not is_alive(str(Owner(here.host, proc.pid, "1", "y")), None, now, here)  # never heartbeat
    finally:
        proc.kill()
        proc.wait(5)
