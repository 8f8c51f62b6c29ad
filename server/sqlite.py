"""SQLite connections for a gevent worker: another process's lock never blocks the loop.

SQLite's own busy handler waits for a lock inside C: under gevent that wait
holds the whole worker (every stream, ``/health``) for up to its timeout
whenever ``python -m jobs.worker`` or another server process writes the
same file. So connections here have no busy timeout, and ``patiently``
retries a statement that met a lock with ``time.sleep`` between tries,
which yields to the other greenlets once gevent patched ``time`` (and just
sleeps the thread otherwise). Past ``BUSY_WAIT_SECONDS`` it gives up with
``Busy``, which the API answers with a ``503`` (``server.errors``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How long a statement may wait for another process's write lock.
BUSY_WAIT_SECONDS = 5.0
_FIRST_PAUSE_SECONDS = 0.002
_LONGEST_PAUSE_SECONDS = 0.05


class Busy(Exception):
    """Another process held the database's lock past ``BUSY_WAIT_SECONDS``."""


def connect(path: str) -> sqlite3.Connection:
    """Autocommit, any thread (each caller serialises with its own lock), WAL,
    ``synchronous=NORMAL``, and no busy handler (``patiently`` waits instead)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0)
    patiently(lambda: db.execute("PRAGMA journal_mode=WAL"))
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=0")
    return db


def is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def patiently(
    run: Callable[[], T], wait_seconds: float | None = None, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``run()``, retried while the database is locked by someone else, for
    ``wait_seconds`` (default ``BUSY_WAIT_SECONDS``)."""
    deadline = time.monotonic() + (BUSY_WAIT_SECONDS if wait_seconds is None else wait_seconds)
    pause = _FIRST_PAUSE_SECONDS
    while True:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if not is_locked(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise Busy(f"the database is locked by another process ({exc})") from exc
        sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)
