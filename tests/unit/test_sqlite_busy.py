"""Another process's SQLite lock, in process: ``server.sqlite.patiently``
waits for it without SQLite's blocking busy handler, gives up with ``Busy``,
and the API answers that with a 503; under gevent the wait lets the other
greenlets run. A second connection on the same file plays the other process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

import server.sqlite
from server.sqlite import Busy, connect, patiently
from tests.support.apps import app_in

ROOT = Path(__file__).resolve().parents[2]
SLEEP = {"type": "sleep", "params": {"seconds": 0}}


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_patiently_retries_until_the_other_writer_commits(tmp_path: Path) -> None:
    db = connect(str(tmp_path / "x.db"))
    db.execute("CREATE TABLE t (n INTEGER)")
    other = _hold_write_lock(tmp_path / "x.db")
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            other.execute("COMMIT")  # the other process finishes its write

    patiently(lambda: db.execute("INSERT INTO t VALUES (1)"), sleep=pause)
    assert len(pauses) == 3 and pauses == sorted(pauses)  # backing off, never a blocking wait
    assert db.execute("SELECT n FROM t").fetchall() == [(1,)]


def test_patiently_gives_up_with_busy_and_other_errors_pass_through(tmp_path: Path) -> None:
    db = connect(str(tmp_path / "x.db"))
    db.execute("CREATE TABLE t (n INTEGER)")
    _hold_write_lock(tmp_path / "x.db")
    with pytest.raises(Busy, match="locked by another process"):
        patiently(lambda: db.execute("INSERT INTO t VALUES (1)"), wait_seconds=0.05)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        patiently(lambda: db.execute("SELECT * FROM missing"))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from app_in(tmp_path, history_size=10)


def test_a_locked_database_is_a_503_on_writes_never_a_500(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = app.test_client()
    assert http.post("/jobs", json=SLEEP).status_code == 201  # the tables exist, the service runs
    monkeypatch.setattr(server.sqlite, "BUSY_WAIT_SECONDS", 0.05)
    other = _hold_write_lock(tmp_path / "jobs.db")
    try:
        for answer in (http.post("/jobs", json=SLEEP), http.post("/events", json={"topic": "t", "data": 1})):
            assert answer.status_code == 503, answer.json
            assert "locked by another process" in answer.json["error"]  # type: ignore[index]
            assert answer.headers["Retry-After"] == "5"
    finally:
        other.execute("ROLLBACK")
    assert http.post("/events", json={"topic": "t", "data": 2}).status_code == 202


GEVENT_WAIT = """
from gevent import monkey; monkey.patch_all()
import sqlite3, sys, threading, time
import gevent
from jobs.sqlite_store import SqliteJobStore
path = sys.argv[1]
store = SqliteJobStore(path)
other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
other.execute("BEGIN IMMEDIATE")
ticks = []
def tick():
    while len(ticks) < 1000:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)
ticker = gevent.spawn(tick)
releaser = threading.Timer(0.5, lambda: other.execute("COMMIT"))  # a real OS thread: the other process
releaser.start()
started = time.monotonic()
store.create("sleep", "waited", {})
waited = time.monotonic() - started
during = [t for t in ticks if started <= t <= started + waited]
print(round(waited, 2), len(during))
"""


def test_under_gevent_the_wait_for_a_lock_lets_other_greenlets_run(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    init = f"from jobs.sqlite_store import SqliteJobStore; SqliteJobStore({str(path)!r}).close()"
    subprocess.run([sys.executable, "-c", init], cwd=ROOT, check=True, timeout=30)
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_WAIT, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    waited, ticks = done.stdout.split()
    assert float(waited) >= 0.4  # it did wait for the other writer...
    assert int(ticks) >= 20  # ...while the loop kept serving (SQLite's handler would give 0 or 1)


def test_the_lock_is_only_ever_waited_for_in_python() -> None:
    db = connect(":memory:")
    assert db.execute("PRAGMA busy_timeout").fetchone() == (0,)
