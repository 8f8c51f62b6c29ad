"""The cleanup daemon: keep-alive ticks, and a sweep every ``STREAM_CLEANUP_INTERVAL``.

A WSGI app only learns that a peer left when a write fails, and a peer that
stopped reading never makes a write fail; it just blocks. The sweep removes
both kinds (no successful write for too long, buffer full for too long) and
cuts their sockets so the blocked greenlet is released.

Keep-alives are driven from here too: each tick puts one marker into the
queue of every stream idle for a keep-alive interval, and the stream writes
a comment. Streams then wait with a plain ``get()``: no timer per stream and
no timeout object per event, which at 10,000 streams is memory and CPU.

Token expiry too: each tick asks the registry to end the streams whose JWT
reached its ``exp`` (``Registry.expire``, which looks only at streams opened
with a token), so a stream outlives its token by at most one tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.background import Background
from streaming.core.registry import Registry

log = logging.getLogger("jobstream.cleanup")


# Keep-alives go out within this fraction of the interval after it elapsed.
TICKS_PER_KEEPALIVE = 4
MAX_TICK_SECONDS = 1.0


class Cleaner:
    def __init__(
        self,
        registry: Registry,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        extra: Callable[[], None] | None = None,
        keepalive_seconds: float | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.interval = interval_seconds
        self.clock = clock
        self.extra = extra
        self.keepalive = keepalive_seconds
        self.wall_clock = wall_clock
        self.tick = min(interval_seconds, MAX_TICK_SECONDS)
        if keepalive_seconds is not None:
            self.tick = min(self.tick, keepalive_seconds / TICKS_PER_KEEPALIVE)
        self._loop_thread = Background("jobstream-cleanup", self._loop)

    def run_once(self, now: float) -> int:
        removed = self.registry.sweep(now)
        for client, reason in removed:
            log.warning(
                "stream removed by cleanup",
                extra={
                    "event": "stream_removed",
                    "client_id": client.id,
                    "ip": client.remote_addr,
                    "reason": reason,
                    "seconds_since_write": round(now - client.writer.last_write, 3),
                    "queue_depth": client.writer.queue.qsize(),
                },
            )
        if self.extra is not None:
            self.extra()
        return len(removed)

    def start(self) -> None:
        self._loop_thread.start()

    def _loop(self, stop: threading.Event) -> None:
        next_sweep = self.clock() + self.interval
        # stop.wait, not sleep: shutdown ends the loop at once.
        while not stop.wait(self.tick):
            now = self.clock()
            try:
                if self.keepalive is not None:
                    self.registry.keepalive(now, self.keepalive)
                self.registry.expire(self.wall_clock())
                if now >= next_sweep:
                    next_sweep = now + self.interval
                    self.run_once(now)
            except Exception:
                log.exception("cleanup pass failed; will retry next tick")

    def stop(self, timeout: float = 2.0) -> None:
        self._loop_thread.stop(timeout)

    @property
    def running(self) -> bool:
        return self._loop_thread.running
