"""The canary: proof that this worker's events still flow, for ``/health``.

Every ``STREAM_CANARY_INTERVAL`` seconds the worker publishes one tiny event
on ``CANARY_TOPIC`` through its broker (embedded: the publish lock and the
fan-out; Redis: ``XADD``, then this worker's reader and its fan-out) and
``Registry.fanout`` hands it back to ``arrived`` instead of to any stream.
A worker whose HTTP still answers but whose events stopped (a reader stuck,
Redis refusing writes, a publish lock never released) stops getting its
canaries back, and after ``MISSES_DEGRADED`` misses in a row ``/health`` says
``degraded`` with a ``503``, so a load balancer takes it out.

A canary is *missed* when it is not back by the time the next one is sent
(one interval later; a publish that failed is a miss too). One back in time
clears the run of misses; a late one is still timed (the histogram shows how
late) but clears nothing. If the loop itself stops ticking for
``MISSES_DEGRADED + 1`` intervals (and ``STALL_GRACE_SECONDS``), the canary is not ok either. Before the
first canary is due nothing can have been missed: a worker that just started
is ok, so a load balancer sees no flapping at start-up.

Time is injected (``tick(now)``, ``status(now)``) and the loop waits on its
stop event, so tests drive it without sleeping.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.background import Background
from streaming.core.broker import Broker, BrokerUnavailable
from streaming.core.events import Event
from streaming.ops.observers import Hooks

log = logging.getLogger("jobstream.canary")

CANARY_TOPIC = "jobstream/canary"
CANARY_EVENT = "canary"
# Misses in a row after which /health turns 503 "degraded".
MISSES_DEGRADED = 3
# Canaries remembered, so one back late is still timed.
PENDING_KEPT = 8
# A tick may wait out a broker timeout (Redis: 1 s) before the next can
# start; a loop is stalled only past that too, so a short interval does not flap.
STALL_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class CanaryStatus:
    enabled: bool
    ok: bool
    last_seconds: float | None  # delivery time of the newest canary back, in seconds
    missed: int  # misses in a row

    def as_json(self) -> dict[str, Any]:
        last = None if self.last_seconds is None else round(self.last_seconds, 6)
        return {"enabled": self.enabled, "ok": self.ok, "last_seconds": last, "missed": self.missed}


class Canary:
    def __init__(
        self,
        broker: Broker,
        interval_seconds: float,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.interval = interval_seconds
        self.hooks = hooks or Hooks()
        self.clock = clock
        self._lock = threading.Lock()
        # Who sent a canary: the process id alone would match a canary left in
        # Redis by an earlier worker that had the same pid. Set in ``start``
        # (after the fork), or at the first tick.
        self.origin = ""
        self._seq = 0
        self._pending: dict[int, tuple[float, bool]] = {}  # seq -> (sent at, judged missed)
        self._started_at: float | None = None
        self._last_tick: float | None = None
        self.missed = 0
        self.last_seconds: float | None = None
        self._loop = Background("jobstream-canary", self._run)

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    # -- the loop ---------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._loop.started:
            return
        self.begin(self.clock())
        self._loop.start()

    def begin(self, now: float) -> None:
        """Start counting from ``now`` (``start`` does this; tests call it directly)."""
        with self._lock:
            self.origin = secrets.token_hex(8)
            self._started_at = now

    def stop(self, timeout: float = 2.0) -> None:
        self._loop.stop(timeout)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.tick(self.clock())
            except Exception:
                log.exception("canary tick failed; will retry")

    def tick(self, now: float) -> None:
        """Judge the canaries still out (each is missed), then send the next one."""
        with self._lock:
            if not self.origin:
                self.origin = secrets.token_hex(8)
                self._started_at = now
            missed = 0
            for seq, (sent, judged) in self._pending.items():
                if not judged:
                    self._pending[seq] = (sent, True)
                    missed += 1
            self.missed += missed
            self._seq += 1
            seq = self._seq
            self._pending[seq] = (now, False)
            if len(self._pending) > PENDING_KEPT:
                del self._pending[min(self._pending)]
            self._last_tick = now
            data = f"{self.origin}:{seq}"
            run = self.missed
        for _ in range(missed):
            self.hooks.call("canary_missed")
        if missed and run >= MISSES_DEGRADED:
            log.warning("canary missed", extra={"event": "canary_missed", "missed": run})
        try:
            self.broker.publish(CANARY_TOPIC, CANARY_EVENT, data)
        except BrokerUnavailable as exc:
            # Counted at the next tick, as any canary that did not come back.
            log.debug("canary not published", extra={"event": "canary_unpublished", "error": str(exc)})

    # -- arrivals (inside Registry.fanout: must not block) ------------------

    def arrived(self, event: Event) -> None:
        """An internal event came through the fan-out; time it if it is ours."""
        if event.topic != CANARY_TOPIC:
            return
        origin, _, number = event.data.rpartition(":")
        if origin != self.origin or not number.isdigit():
            return  # another worker's (with Redis every reader sees every canary)
        now = self.clock()
        with self._lock:
            sent = self._pending.pop(int(number), None)
            if sent is None:
                return  # forgotten already, or a duplicate
            seconds = max(0.0, now - sent[0])
            self.last_seconds = seconds
            if not sent[1]:
                self.missed = 0  # back in time
        self.hooks.call("canary_arrived", seconds)

    # -- what /health says ------------------------------------------------------

    def status(self, now: float | None = None) -> CanaryStatus:
        if not self.enabled:
            return CanaryStatus(False, True, None, 0)
        now = self.clock() if now is None else now
        with self._lock:
            missed, last, ticked, started = self.missed, self.last_seconds, self._last_tick, self._started_at
        since = ticked if ticked is not None else started
        # The loop stopped ticking (before it ever ticked: since start-up).
        stalled = since is not None and now - since > (MISSES_DEGRADED + 1) * self.interval + STALL_GRACE_SECONDS
        return CanaryStatus(True, missed < MISSES_DEGRADED and not stalled, last, missed)
