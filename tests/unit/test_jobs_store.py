"""What only SqliteJobStore does: cheap counts, thread safety, the change feed, dead runners.

The behaviour every store shares is in ``test_job_stores.py``.
"""

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


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "sub" / "jobs.db")


@pytest.fixture
def store(db: str) -> Iterator[SqliteJobStore]:
    s = SqliteJobStore(db)
    yield s
    s.close()


def test_counts_are_read_from_the_counts_table_not_the_jobs(store: SqliteJobStore, db: str) -> None:
    store.create("sleep", "a", {})
    assert store.counts()["pending"] == 1
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
