"""A fleet worker's lease and its Redis breaker, on an injected clock (``streaming.scaleout.fleet``).

Redis decides when a lease expires, on its own clock; these say when this
worker refreshes, rewrites its view, and tries Redis again after a failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_REFRESH_SECONDS = 1.0
# After Redis failed, how long until the agent tries again.
RETRY_SECONDS = 1.0
# A worker's view is rewritten every refresh up to this many streams, then
# every streams / this many seconds (10 s at 10,000), at most every
# MAX_VIEW_SECONDS: encoding it costs 10-15 us a stream (docs/benchmarks.md, run fleet).
VIEW_STREAMS_PER_SECOND = 1000
MAX_VIEW_SECONDS = 30.0


def refresh_seconds(lease_seconds: float) -> float:
    """How often a worker refreshes its lease: four times per lease, at least every second."""
    return min(MAX_REFRESH_SECONDS, lease_seconds / 4)


def view_seconds(streams: int, refresh: float) -> float:
    """How long until a worker with ``streams`` streams rewrites its view."""
    return max(refresh, min(MAX_VIEW_SECONDS, streams / VIEW_STREAMS_PER_SECOND))


class Lease:
    """This worker's lease as seen on its own clock.

    Redis decides expiry on its clock (``now + lease`` at each refresh); this
    only says when to refresh next and whether so long passed without a
    successful refresh that the lease may have lapsed: then other workers may
    have counted our slots as free and reaped them, so we resync.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.every = refresh_seconds(seconds)
        self.clock = clock
        self.last: float | None = None  # any call (each one extends the lease)
        self.last_full: float | None = None  # a refresh (lease, view, reap)

    def refreshed(self, at: float, full: bool) -> None:
        """A call sent at ``at`` (local clock) succeeded; ``full``: it was a refresh."""
        self.last = at
        if full:
            self.last_full = at

    def due_in(self) -> float:
        """Seconds until the next refresh is due (0: now)."""
        if self.last_full is None:
            return 0.0
        return max(0.0, self.last_full + self.every - self.clock())

    def lapsed(self) -> bool:
        """Whether the lease may have expired in Redis (never refreshed counts)."""
        return self.last is None or self.clock() - self.last >= self.seconds


class Breaker:
    """Redis up or down for admissions, and when to try again (injected clock)."""

    def __init__(self, retry_seconds: float = RETRY_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_seconds = retry_seconds
        self.clock = clock
        self.up = True
        self.retry_at = 0.0

    def failed(self) -> bool:
        """Note a failure; ``True`` if it is news (Redis was up)."""
        was_up, self.up = self.up, False
        self.retry_at = self.clock() + self.retry_seconds
        return was_up

    def succeeded(self) -> bool:
        """Note a success; ``True`` if it is news (Redis was down)."""
        was_down = not self.up
        self.up = True
        return was_down

    def may_try(self) -> bool:
        return self.up or self.clock() >= self.retry_at

    def wait_seconds(self) -> float:
        return 0.0 if self.up else max(0.0, self.retry_at - self.clock())
