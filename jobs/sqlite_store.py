"""``JobStore`` on SQLite: the embedded default, one file shared with the event history.

Constraints that shape this module:

* One connection and a lock per store, held only around SQLite calls. Under
  gevent the lock is a gevent lock and every caller is a greenlet; handler
  OS threads never touch the store (the runner writes for them).
* Writes run in ``BEGIN IMMEDIATE`` so two processes never deadlock upgrading
  a read lock; the wait for the other process's short write happens in
  ``server.sqlite.patiently``, cooperatively (SQLite's own busy handler
  would block the gevent loop), and past 5 s the API answers ``503``.
* ``synchronous=NORMAL`` in WAL mode: a commit has been written to the WAL
  file (the OS page cache) before ``COMMIT`` returns, so a ``201`` survives
  ``kill -9`` of the server; only an OS crash or power loss could lose the
  last commits, which ``FULL`` would guard at one fsync per write.
* ``job_counts`` is kept by triggers in the same transaction as each status
  write, so ``/health`` reads five rows instead of counting the jobs.
* ``job_changes`` is the cross-process change feed: every write appends the
  job JSON there in the same transaction; a server polls it for the changes
  of ``python -m jobs.worker`` processes. It is trimmed to ``FEED_KEEP`` rows.
  A log rather than a ``change_seq`` column on ``jobs``: a column keeps only
  a job's latest state, so a worker's started-then-finished within one poll
  would reach the streams as one event, and state changes must never drop.
* ``UPDATE ... RETURNING`` needs SQLite 3.35 (2021); older libraries are refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jobs.model import Job, new_job_id, now_ms
from jobs.owners import Owner, is_alive
from jobs.states import InvalidTransition, Status, check_transition
from jobs.store import EVERYONE, MAX_PAGE, JobNotFound, Page, Selection, Viewer, decode_cursor, encode_cursor
from server.sqlite import connect, patiently

MIN_SQLITE = (3, 35, 0)
FEED_KEEP = 10_000
FEED_TRIM_EVERY = 500

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL,
        status TEXT NOT NULL, progress REAL NOT NULL, message TEXT, result TEXT, error TEXT,
        created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, updated_at INTEGER NOT NULL,
        version INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, owner TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
        owner_sub TEXT)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq)",
    "CREATE TABLE IF NOT EXISTS job_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    *(f"INSERT OR IGNORE INTO job_counts (status, n) VALUES ('{s.value}', 0)" for s in Status),
    """CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN
        UPDATE job_counts SET n = n + 1 WHERE status = NEW.status; END""",
    """CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF status ON jobs
        WHEN OLD.status <> NEW.status BEGIN
        UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
        UPDATE job_counts SET n = n + 1 WHERE status = NEW.status; END""",
    """CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET n = n - 1 WHERE status = OLD.status; END""",
    """CREATE TABLE IF NOT EXISTS job_changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, writer TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS job_runners (owner TEXT PRIMARY KEY, heartbeat_at INTEGER NOT NULL) WITHOUT ROWID",
]

# ``owner`` is the runner that claimed a job (``jobs.owners``); ``owner_sub``
# the user who created it (``Job.owner``).
_COLUMNS = (
    "seq, id, type, name, params, status, progress, message, result, error,"
    " created_at, started_at, finished_at, updated_at, version, owner_sub"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _job(row: tuple[Any, ...]) -> Job:
    _seq, id_, type_, name, params, status, progress, message, result, error, *stamps, version, owner = row
    created, started, finished, updated = stamps
    return Job(
        id=id_,
        type=type_,
        name=name,
        params=json.loads(params),
        status=Status(status),
        progress=float(progress),
        message=message,
        result=None if result is None else json.loads(result),
        error=error,
        created_at=created,
        started_at=started,
        finished_at=finished,
        updated_at=updated,
        version=version,
        owner=owner,
    )


def _visible_to(viewer: Viewer) -> tuple[str, tuple[Any, ...]]:
    """The ``WHERE`` term (and its arguments) for the jobs ``viewer`` sees."""
    if viewer.everything:
        return "1", ()
    if viewer.sub is None:
        return "owner_sub IS NULL", ()
    return "(owner_sub IS NULL OR owner_sub = ?)", (viewer.sub,)


def _placeholders(values: Collection[Any]) -> str:
    return ",".join("?" * len(values))


class SqliteJobStore:
    def __init__(self, path: str, owner: Owner | None = None) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise RuntimeError(f"the job store needs SQLite >= 3.35 (RETURNING); found {sqlite3.sqlite_version}")
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        self.owner = owner or Owner.current()
        self.instance = str(self.owner)
        self._lock = threading.Lock()
        self._db = connect(path)
        self._writes = 0
        with self._write() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "owner_sub" not in columns:  # a file made before job owners: every job unowned
                db.execute("ALTER TABLE jobs ADD COLUMN owner_sub TEXT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            patiently(lambda: self._db.execute("BEGIN IMMEDIATE"))  # the one wait for another writer
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Collection[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return patiently(lambda: self._db.execute(sql, tuple(args)).fetchall())

    def _logged(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> list[Job]:
        """Jobs from RETURNING rows, each appended to the change feed."""
        jobs = [_job(row) for row in rows]
        db.executemany(
            "INSERT INTO job_changes (writer, data) VALUES (?, ?)", [(self.instance, _dumps(j.to_json())) for j in jobs]
        )
        self._writes += len(jobs)
        if self._writes >= FEED_TRIM_EVERY:
            self._writes = 0
            db.execute("DELETE FROM job_changes WHERE seq <= (SELECT MAX(seq) FROM job_changes) - ?", (FEED_KEEP,))
        return jobs

    # -- the API's operations --------------------------------------------------

    def create(self, type: str, name: str, params: dict[str, Any], owner: str | None = None) -> Job:
        now = now_ms()
        with self._write() as db:
            rows = db.execute(
                "INSERT INTO jobs (id, type, name, params, status, progress, created_at, updated_at, version,"
                f" owner_sub) VALUES (?, ?, ?, ?, 'pending', 0.0, ?, ?, 1, ?) RETURNING {_COLUMNS}",
                (new_job_id(), type, name, _dumps(params), now, now, owner),
            ).fetchall()
            return self._logged(db, rows)[0]

    def get(self, job_id: str) -> Job | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def page(
        self, status: Status | None = None, limit: int = 50, cursor: str | None = None, viewer: Viewer = EVERYONE
    ) -> Page:
        before = decode_cursor(cursor) if cursor else None
        visible, visible_args = _visible_to(viewer)
        where: list[str] = [visible]
        args: list[Any] = [*visible_args]
        if status is not None:
            where.append("status = ?")
            args.append(status.value)
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}"
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?", (*args, limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        return Page([_job(r) for r in rows], encode_cursor(rows[-1][0]) if more and rows else None)

    def newest(self, selection: Selection, limit: int = MAX_PAGE, viewer: Viewer = EVERYONE) -> list[Job]:
        visible, visible_args = _visible_to(viewer)
        if selection.everything:
            sql = f"SELECT {_COLUMNS} FROM jobs WHERE {visible} ORDER BY seq DESC LIMIT ?"
            return [_job(r) for r in self._read(sql, (*visible_args, limit))]
        where: list[str] = []
        args: list[Any] = []
        if selection.ids:
            where.append(f"id IN ({_placeholders(selection.ids)})")
            args.extend(selection.ids)
        for prefix in selection.id_prefixes:
            # A range on the unique index instead of LIKE, which would scan.
            where.append("(id >= ? AND id < ?)")
            args.extend((prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)))
        if not where:
            return []
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE ({' OR '.join(where)}) AND {visible} ORDER BY seq DESC LIMIT ?"
        return [_job(r) for r in self._read(sql, (*args, *visible_args, limit))]

    def withdraw(self, job_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM jobs WHERE id = ? AND status = 'pending'", (job_id,)).rowcount == 1

    def request_cancel(self, job_id: str) -> Job:
        now = now_ms()
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            current = Status(row[0])
            check_transition(current, Status.CANCELLED)
            if current is Status.PENDING:
                rows = db.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, version = version + 1"
                    f" WHERE id = ? AND status = 'pending' RETURNING {_COLUMNS}",
                    (now, now, job_id),
                ).fetchall()
                return self._logged(db, rows)[0]
            # Running: its runner (maybe in another process) sees the flag and
            # stops the handler; the job changes when it ends, not now.
            rows = db.execute(
                f"UPDATE jobs SET cancel_requested = 1 WHERE id = ? RETURNING {_COLUMNS}", (job_id,)
            ).fetchall()
            return _job(rows[0])

    # -- the runner's operations -----------------------------------------------

    def claim(self, types: Collection[str]) -> Job | None:
        if not types:
            return None
        now = now_ms()
        with self._write() as db:
            # One statement picks and takes the oldest pending job; BEGIN
            # IMMEDIATE already excludes other writers, and the repeated
            # status test keeps it correct even without that.
            rows = db.execute(
                "UPDATE jobs SET status = 'in_progress', started_at = ?, updated_at = ?, version = version + 1,"
                " attempts = attempts + 1, owner = ?"
                " WHERE seq = (SELECT seq FROM jobs WHERE status = 'pending'"
                f" AND type IN ({_placeholders(types)}) ORDER BY seq LIMIT 1)"
                f" AND status = 'pending' RETURNING {_COLUMNS}",
                (now, now, self.instance, *types),
            ).fetchall()
            return self._logged(db, rows)[0] if rows else None

    def progress(self, job_id: str, fraction: float, message: str | None) -> Job | None:
        now = now_ms()
        with self._write() as db:
            rows = db.execute(
                "UPDATE jobs SET progress = ?, message = COALESCE(?, message), updated_at = ?, version = version + 1"
                f" WHERE id = ? AND status = 'in_progress' AND owner = ? RETURNING {_COLUMNS}",
                (fraction, message, now, job_id, self.instance),
            ).fetchall()
            return self._logged(db, rows)[0] if rows else None

    def finish(
        self,
        job_id: str,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> Job | None:
        check_transition(Status.IN_PROGRESS, status)
        now = now_ms()
        encoded = None if result is None else _dumps(result)
        with self._write() as db:
            rows = db.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, progress = COALESCE(?, progress),"
                " message = COALESCE(?, message), finished_at = ?, updated_at = ?, version = version + 1"
                f" WHERE id = ? AND status = 'in_progress' AND owner = ? RETURNING {_COLUMNS}",
                (status.value, encoded, error, progress, message, now, now, job_id, self.instance),
            ).fetchall()
            return self._logged(db, rows)[0] if rows else None

    def cancel_requested(self, job_ids: Collection[str]) -> set[str]:
        if not job_ids:
            return set()
        sql = f"SELECT id FROM jobs WHERE id IN ({_placeholders(job_ids)}) AND cancel_requested = 1"
        return {r[0] for r in self._read(sql, job_ids)}

    def heartbeat(self) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO job_runners (owner, heartbeat_at) VALUES (?, ?)"
                " ON CONFLICT(owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                (self.instance, now_ms()),
            )

    def recover_interrupted(self) -> list[Job]:
        now = now_ms()
        with self._write() as db:
            owners = [r[0] for r in db.execute("SELECT DISTINCT owner FROM jobs WHERE status = 'in_progress'")]
            beats = dict(db.execute("SELECT owner, heartbeat_at FROM job_runners").fetchall())
            dead = [o for o in owners if o != self.instance and not is_alive(o, beats.get(o), now, self.owner)]
            gone = [o for o, beat in beats.items() if o != self.instance and not is_alive(o, beat, now, self.owner)]
            db.execute(f"DELETE FROM job_runners WHERE owner IN ({_placeholders(gone)})", gone)
            return self._interrupt(db, dead, now)

    def release(self) -> list[Job]:
        with self._write() as db:
            db.execute("DELETE FROM job_runners WHERE owner = ?", (self.instance,))
            return self._interrupt(db, [self.instance], now_ms())

    def _interrupt(self, db: sqlite3.Connection, owners: list[str], now: int) -> list[Job]:
        if not owners:
            return []
        rows = db.execute(
            "UPDATE jobs SET status = 'error', error = 'interrupted', finished_at = ?, updated_at = ?,"
            f" version = version + 1 WHERE status = 'in_progress' AND owner IN ({_placeholders(owners)})"
            f" RETURNING {_COLUMNS}",
            (now, now, *owners),
        ).fetchall()
        return self._logged(db, rows)

    # -- health and the change feed --------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in Status}
        counts.update(self._read("SELECT status, n FROM job_counts"))
        return {"total": sum(counts.values()), **counts}

    def changes(self, after: int, limit: int = 1000) -> tuple[list[dict[str, Any]], int]:
        rows = self._read(
            "SELECT seq, writer, data FROM job_changes WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        )
        theirs = [json.loads(data) for _, writer, data in rows if writer != self.instance]
        return theirs, rows[-1][0] if rows else after

    def last_change(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM job_changes")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["InvalidTransition", "SqliteJobStore"]
