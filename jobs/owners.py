"""Who runs a job, and whether that runner is still alive.

A claimed job records its runner as ``host:pid:start:token``. Recovery marks
a job ``error``/``interrupted`` only when that runner is dead, so a server
restarting beside a live ``python -m jobs.worker`` leaves the worker's jobs
alone:

* same host: dead when no process has that pid with that start time
  (``/proc/<pid>/stat``), so a pid reused after a restart (pid 7 again in a
  container) still counts as dead;
* other host, or no ``/proc``: dead when its heartbeat is older than
  ``STALE_AFTER_MS``.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

# Runners heartbeat every HEARTBEAT_SECONDS; three misses and more count as dead.
HEARTBEAT_SECONDS = 2.0
STALE_AFTER_MS = 30_000


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` in clock ticks, or None if no such live process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces; the fields after it start past the last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) <= 19 or fields[0] in (b"Z", b"X"):
        return None  # a killed worker stays a zombie until someone reaps it
    return fields[19].decode()


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: str
    token: str

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _process_start(pid) or "?", secrets.token_hex(4))

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.rsplit(":", 3)
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2], parts[3])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}:{self.token}"


def is_alive(owner_text: str, heartbeat_ms: int | None, now_ms: int, here: Owner) -> bool:
    """Whether the runner named ``owner_text`` may still be running its jobs."""
    owner = Owner.parse(owner_text)
    if owner is None or heartbeat_ms is None:
        return False  # never registered (or unreadable): nobody will finish its jobs
    if owner.host == here.host and owner.start != "?":
        return _process_start(owner.pid) == owner.start
    return now_ms - heartbeat_ms < STALE_AFTER_MS
