"""Event ids: ``<ms-epoch>-<sequence>``, ordered numerically part by part.

This is the rule Redis Stream entry ids follow, so the Redis broker can use
the entry id as the SSE id unchanged. An id is never reused: the generator
starts above the last id it is told about (the persisted history), even when
the wall clock went backwards across a restart.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_ID = re.compile(r"\A([0-9]{1,20})-([0-9]{1,20})\Z")

Key = tuple[int, int]


def parse_id(value: str | None) -> Key | None:
    """``"1732800000123-4"`` -> ``(1732800000123, 4)``; anything else -> ``None``."""
    if not value:
        return None
    match = _ID.match(value.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def format_id(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


class IdGenerator:
    """Monotonic ids. Not thread-safe: the caller issues ids under its publish lock."""

    def __init__(self, last: Key | None = None, clock_ms: Callable[[], int] | None = None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._last: Key = last or (0, 0)

    @property
    def last(self) -> Key:
        return self._last

    def advance_to(self, key: Key) -> None:
        """Never issue an id at or below ``key`` (e.g. one seen from another process)."""
        if key > self._last:
            self._last = key

    def next(self) -> Key:
        now = self._clock_ms()
        ms, seq = self._last
        self._last = (now, 0) if now > ms else (ms, seq + 1)
        return self._last
