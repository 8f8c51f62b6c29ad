"""Recent events, kept for ``Last-Event-ID`` replay.

``History`` is the in-memory window every replay reads. In the embedded
default it is backed by ``SqliteHistory`` in the job store's database file,
so a restarted server still resumes ids issued before the restart.

Replay is decided by the *floor*: the newest id that has been trimmed out of
the window. An id is resumable when it is the floor or still in the window;
anything else (older than the floor, newer than anything issued, or never
issued) cannot be resumed without a possible gap and gets a reset.

Resumability is decided on ids, before anything is filtered: an id the
reader may not see (a private event's, a snapshot's) still resumes, and an
empty replay is not a gap.
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
from collections.abc import Callable, Iterable

from server.sqlite import connect, patiently
from streaming.core.events import Delivery, Event
from streaming.core.ids import Key, format_id
from streaming.core.topics import TopicFilter, is_internal

EXPIRED = "expired"
UNKNOWN = "unknown"

# Columns added to ``stream_events`` after its first release, for older files.
_ADDED_COLUMNS = (
    ("private", "INTEGER NOT NULL DEFAULT 0"),
    ("owner", "TEXT"),
    ("low", "INTEGER NOT NULL DEFAULT 0"),
    ("conflate", "TEXT"),
)

# Whether a reader may get an event (``Client.may_read``); asked of private events only.
Reader = Callable[[Event], bool]


def visible(events: Iterable[Event], topics: TopicFilter, may_read: Reader | None) -> list[Event]:
    """``events`` a reader gets: matching ``topics``; private ones only if
    ``may_read`` says so (no reader: none); internal ones never (none is
    stored, but a stream entry written by another program could be one)."""
    return [
        e
        for e in events
        if topics.matches(e.topic)
        and not is_internal(e.topic)
        and (not e.private or (may_read is not None and may_read(e)))
    ]


_INSERT = (
    "INSERT OR REPLACE INTO stream_events (ms, seq, topic, event, data, private, owner, low, conflate)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _delivery_columns(event: Event) -> tuple[int, str | None, int, str | None]:
    return int(event.private), event.owner, int(event.low), event.conflate


class ReplayGap(Exception):
    """The id cannot be resumed; ``reason`` is ``expired`` or ``unknown``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class History:
    """A bounded, ordered window of events. Callers serialise ``append``."""

    def __init__(self, size: int, events: Iterable[Event] = (), floor: Key = (0, 0)) -> None:
        self.size = size
        self._events: list[Event] = []
        self._keys: list[Key] = []
        self.floor = floor
        for event in events:
            self.append(event)

    def append(self, event: Event) -> None:
        if self.size <= 0:
            self.floor = event.key
            return
        self._events.append(event)
        self._keys.append(event.key)
        # Trim in batches so append stays O(1) amortised.
        excess = len(self._events) - self.size
        if excess >= max(1, self.size // 4):
            self.floor = self._keys[excess - 1]
            del self._events[:excess]
            del self._keys[:excess]

    def after(self, key: Key, topics: TopicFilter, may_read: Reader | None = None) -> list[Event]:
        """Events newer than ``key`` that match ``topics``, oldest first;
        private ones only where ``may_read`` allows (``None``: never).

        Raises ``ReplayGap`` when ``key`` is not resumable.
        """
        keys, events = self._keys, self._events  # one consistent snapshot
        start = len(keys) - self.size if len(keys) > self.size else 0
        floor = keys[start - 1] if start else self.floor
        index = bisect.bisect_left(keys, key, lo=start)
        found = index < len(keys) and keys[index] == key
        if not found and key != floor:
            raise ReplayGap(EXPIRED if key < floor else UNKNOWN)
        first = index + 1 if found else start
        return visible(events[first:], topics, may_read)

    @property
    def last_key(self) -> Key | None:
        return self._keys[-1] if self._keys else None

    def __len__(self) -> int:
        return min(len(self._events), self.size)


class SqliteHistory:
    """Persists the window next to the jobs, so ids survive a restart."""

    def __init__(self, path: str, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._db = connect(path)  # another process's lock: waited for cooperatively (server.sqlite)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS stream_events (ms INTEGER NOT NULL, seq INTEGER NOT NULL,"
            " topic TEXT NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,"
            " private INTEGER NOT NULL DEFAULT 0, owner TEXT, low INTEGER NOT NULL DEFAULT 0, conflate TEXT,"
            " PRIMARY KEY (ms, seq)) WITHOUT ROWID"
        )
        self._add_columns()
        self._db.execute("CREATE TABLE IF NOT EXISTS stream_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._appended = 0

    def _add_columns(self) -> None:
        """A file made before private events (or job owners) lacks their
        columns: add them (every old row public and unowned). Two processes
        opening the same old file may race here; the loser's "duplicate
        column" is the same outcome."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(stream_events)")}
        for name, declaration in _ADDED_COLUMNS:
            if name in columns:
                continue
            try:
                self._db.execute(f"ALTER TABLE stream_events ADD COLUMN {name} {declaration}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise

    def load(self) -> History:
        with self._lock:
            rows = self._db.execute(
                "SELECT ms, seq, topic, event, data, private, owner, low, conflate FROM stream_events ORDER BY ms DESC, seq DESC LIMIT ?",
                (max(self.size, 0),),
            ).fetchall()
            meta = dict(self._db.execute("SELECT name, value FROM stream_meta").fetchall())
        floor: Key = (int(meta.get("floor_ms", 0)), int(meta.get("floor_seq", 0)))
        last = (int(meta.get("last_ms", 0)), int(meta.get("last_seq", 0)))
        events = [
            Event.create(format_id((ms, seq)), topic, event, data, Delivery(bool(private), owner, bool(low), conflate))
            for ms, seq, topic, event, data, private, owner, low, conflate in reversed(rows)
        ]
        if events and events[0].key > floor:
            # Rows older than the window were dropped by an earlier size.
            older = self._db.execute(
                "SELECT ms, seq FROM stream_events WHERE (ms, seq) < (?, ?) ORDER BY ms DESC, seq DESC LIMIT 1",
                events[0].key,
            ).fetchone()
            if older is not None:
                floor = (older[0], older[1])
        history = History(self.size, events, floor=max(floor, last) if not events else floor)
        return history

    def last_issued(self) -> Key:
        with self._lock:
            meta = dict(self._db.execute("SELECT name, value FROM stream_meta").fetchall())
            row = self._db.execute("SELECT ms, seq FROM stream_events ORDER BY ms DESC, seq DESC LIMIT 1").fetchone()
        last = (int(meta.get("last_ms", 0)), int(meta.get("last_seq", 0)))
        return max(last, tuple(row)) if row else last  # type: ignore[return-value]

    def append(self, event: Event) -> None:
        with self._lock:
            if self.size > 0:
                row = (*event.key, event.topic, event.event, event.data, *_delivery_columns(event))
                patiently(lambda: self._db.execute(_INSERT, row))
                self._appended += 1
                if self._appended >= max(1, self.size // 4):
                    self._trim()
            else:
                patiently(lambda: self._set_meta({"last_ms": event.key[0], "last_seq": event.key[1]}))

    def _trim(self) -> None:
        self._appended = 0
        row = self._db.execute(
            "SELECT ms, seq FROM stream_events ORDER BY ms DESC, seq DESC LIMIT 1 OFFSET ?", (self.size,)
        ).fetchone()
        if row is None:
            return
        patiently(lambda: self._db.execute("BEGIN IMMEDIATE"))
        self._db.execute("DELETE FROM stream_events WHERE (ms, seq) <= (?, ?)", row)
        self._set_meta({"floor_ms": row[0], "floor_seq": row[1]})
        self._db.execute("COMMIT")

    def _set_meta(self, values: dict[str, int]) -> None:
        self._db.executemany(
            "INSERT INTO stream_meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
