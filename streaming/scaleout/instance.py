"""Instance-wide stream limits and totals for the workers of one gunicorn master.

``STREAM_MAX_CONNECTIONS`` and ``STREAM_MAX_CONNECTIONS_PER_IP`` limit an
*instance* (one master and all its workers), and ``/health`` reports the
instance whichever worker answers. The workers are forked processes, so they
share a table the master creates before the first fork: an anonymous file
mapped ``MAP_SHARED``, inherited by every worker.

* One row per worker (claimed at ``post_worker_init``): its pid, its open
  streams, and counters it copies from its registry.
* Per-IP counts are a count-min sketch per row (two hashed counter arrays;
  the estimate is the smaller of the two sums). It never under-counts, so
  the per-IP limit is never exceeded; two addresses that collide in *both*
  arrays could share a limit, which needs thousands of distinct addresses.
* ``try_admit`` (sum every row, check, increment the own row) runs under
  ``fcntl.lockf`` on the file: a POSIX record lock, owned per process, so it
  excludes other workers (``flock`` would not: forked children share the
  open file description and with it the lock). It is held for microseconds
  and never across a yield; within a worker the registry lock serialises.
* The master's ``child_exit`` hook zeroes a dead worker's row; ``claim``
  also reclaims rows whose pid no longer exists (a missed hook).
* With Redis, each row also says how far that worker's reader has fanned
  out the event stream (``DeliveryCursors``), so a publish can wait for the
  slowest worker of the host, not only its own (back-pressure across workers).

Imported by ``gunicorn.conf.py`` in the unpatched master: standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from streaming.core.reasons import RefusalReason

# Row header: int64 fields, in this order.
FIELDS = ("pid", "active", "accepted", "rejected", "evicted", "stale", "total_messages", "dropped", "conflated")
_PID, _ACTIVE = 0, 1
# Counters a worker copies from its own registry (everything but pid and active).
COPIED = FIELDS[2:]
# After the counters: the id of the last event the worker's reader fanned
# out, packed into one int64 (written in one store, so never read torn).
_DELIVERED = len(FIELDS)
_HEAD = len(FIELDS) + 1
_SEQ_BITS = 22
SKETCH_DEPTH = 2
SKETCH_WIDTH = 4096

CAPACITY = RefusalReason.CAPACITY
PER_IP = RefusalReason.PER_IP


class TableFull(RuntimeError):
    """Every row belongs to a live worker."""


def _buckets(ip: str) -> tuple[int, int]:
    # A stable hash: Python's hash() differs per process.
    digest = hashlib.blake2b(ip.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little") % SKETCH_WIDTH, int.from_bytes(digest[4:], "little") % SKETCH_WIDTH


class InstanceTable:
    """The shared table. Create it in the master with ``create``; workers inherit it."""

    def __init__(self, fd: int, rows: int) -> None:
        self.fd = fd
        self.rows = rows
        head_bytes = rows * _HEAD * 8
        size = head_bytes + rows * SKETCH_DEPTH * SKETCH_WIDTH * 4
        os.ftruncate(fd, size)
        self._map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        view = memoryview(self._map)
        self._head = view[:head_bytes].cast("q")
        self._sketch = view[head_bytes:].cast("I")

    @classmethod
    def create(cls, rows: int) -> InstanceTable:
        """An unlinked temporary file, so nothing is left behind on any exit."""
        handle = tempfile.TemporaryFile(prefix="jobstream-instance-")
        fd = os.dup(handle.fileno())
        handle.close()
        return cls(fd, rows)

    def close(self) -> None:
        self._head.release()
        self._sketch.release()
        self._map.close()
        os.close(self.fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    # -- rows -----------------------------------------------------------------

    def claim(self, pid: int) -> int:
        """Take a free row (or one whose process is gone) for ``pid``."""
        with self.locked():
            for row in range(self.rows):
                owner = self._head[row * _HEAD + _PID]
                if owner == pid or owner == 0 or not _alive(owner):
                    self._zero(row)
                    self._head[row * _HEAD + _PID] = pid
                    return row
        raise TableFull(f"all {self.rows} worker rows are taken by live processes")

    def release_pid(self, pid: int) -> bool:
        """Forget a worker that exited (the master's ``child_exit``)."""
        with self.locked():
            for row in range(self.rows):
                if self._head[row * _HEAD + _PID] == pid:
                    self._zero(row)
                    return True
        return False

    def _zero(self, row: int) -> None:
        start = row * _HEAD
        for i in range(_HEAD):
            self._head[start + i] = 0
        base = row * SKETCH_DEPTH * SKETCH_WIDTH
        self._sketch[base : base + SKETCH_DEPTH * SKETCH_WIDTH] = memoryview(
            bytes(SKETCH_DEPTH * SKETCH_WIDTH * 4)
        ).cast("I")

    # -- admission --------------------------------------------------------------

    def try_admit(self, row: int, ip: str, max_connections: int, max_per_ip: int) -> RefusalReason | None:
        """Sum, check and count a new stream of ``row`` atomically across workers."""
        buckets = _buckets(ip)
        with self.locked():
            active = sum(self._head[r * _HEAD + _ACTIVE] for r in range(self.rows))
            if active >= max_connections:
                return CAPACITY
            if max_per_ip and self._ip_estimate(buckets) >= max_per_ip:
                return PER_IP
            self._head[row * _HEAD + _ACTIVE] += 1
            for depth, bucket in enumerate(buckets):
                self._sketch[(row * SKETCH_DEPTH + depth) * SKETCH_WIDTH + bucket] += 1
        return None

    def release(self, row: int, ip: str) -> None:
        """A stream of ``row`` ended. Only the own row changes, so no lock:
        a concurrent ``try_admit`` at worst sees the old, higher count."""
        if self._head[row * _HEAD + _ACTIVE] > 0:
            self._head[row * _HEAD + _ACTIVE] -= 1
        for depth, bucket in enumerate(_buckets(ip)):
            index = (row * SKETCH_DEPTH + depth) * SKETCH_WIDTH + bucket
            if self._sketch[index] > 0:
                self._sketch[index] -= 1

    def ip_count(self, ip: str) -> int:
        return self._ip_estimate(_buckets(ip))

    def _ip_estimate(self, buckets: tuple[int, int]) -> int:
        return min(
            sum(self._sketch[(r * SKETCH_DEPTH + depth) * SKETCH_WIDTH + bucket] for r in range(self.rows))
            for depth, bucket in enumerate(buckets)
        )

    # -- totals -----------------------------------------------------------------

    def publish(self, row: int, counters: Mapping[str, Any]) -> None:
        """Copy a worker's own counters into its row (only that worker writes it)."""
        start = row * _HEAD
        for i, name in enumerate(FIELDS):
            if name in COPIED and name in counters:
                self._head[start + i] = int(counters[name])

    def totals(self) -> dict[str, int]:
        """Every field summed over the live rows, plus ``workers``."""
        out = dict.fromkeys(FIELDS[1:], 0)
        workers = 0
        for row in range(self.rows):
            start = row * _HEAD
            if self._head[start + _PID] == 0:
                continue
            workers += 1
            for i, name in enumerate(FIELDS[1:], start=1):
                out[name] += self._head[start + i]
        out["workers"] = workers
        return out

    # -- delivery cursors (Redis) ----------------------------------------------

    def set_delivered(self, row: int, packed: int) -> None:
        self._head[row * _HEAD + _DELIVERED] = packed

    def slowest_delivered(self) -> int:
        """The lowest cursor among live rows that have one; 0 when none has."""
        cursors = (
            self._head[row * _HEAD + _DELIVERED]
            for row in range(self.rows)
            if self._head[row * _HEAD + _PID] != 0 and self._head[row * _HEAD + _DELIVERED] != 0
        )
        return min(cursors, default=0)


def pack_id(ms: int, seq: int) -> int:
    """An event id ``<ms>-<seq>`` as one ordered int64 (seq capped at 2**22 - 1:
    four million events in one millisecond)."""
    return (ms << _SEQ_BITS) | min(seq, (1 << _SEQ_BITS) - 1)


class DeliveryCursors:
    """A worker's view of how far every worker of the host has delivered.

    Best effort by design: a worker that has not read anything yet (cursor 0)
    or has stopped reading is not waited for, and callers bound their wait.
    """

    def __init__(self, table: InstanceTable, row: int) -> None:
        self.table = table
        self.row = row

    def report(self, ms: int, seq: int) -> None:
        self.table.set_delivered(self.row, pack_id(ms, seq))

    def clear(self) -> None:
        self.table.set_delivered(self.row, 0)

    def all_past(self, ms: int, seq: int) -> bool:
        """Whether every worker that reads has delivered ``<ms>-<seq>``."""
        slowest = self.table.slowest_delivered()
        return slowest == 0 or slowest >= pack_id(ms, seq)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InstanceAdmission:
    """The registry's admission policy when workers share a table (see ``Registry``)."""

    def __init__(self, table: InstanceTable, row: int, max_connections: int, max_per_ip: int) -> None:
        self.table = table
        self.row = row
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip

    def try_admit(self, ip: str) -> RefusalReason | None:
        return self.table.try_admit(self.row, ip, self.max_connections, self.max_per_ip)

    def release(self, ip: str) -> None:
        self.table.release(self.row, ip)

    def report(self, counters: Mapping[str, int]) -> None:
        self.table.publish(self.row, counters)

    def totals(self, local: Mapping[str, Any]) -> dict[str, int]:
        """Publish this worker's counters, then return the instance's."""
        self.table.publish(self.row, local)
        return self.table.totals()
