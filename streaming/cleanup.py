"""The cleanup daemon: every ``STREAM_CLEANUP_INTERVAL`` it sweeps the registry.

A WSGI app only learns that a peer left when a write fails, and a peer that
stopped reading never makes a write fail; it just blocks. The sweep removes
both kinds (no successful write for too long, buffer full for too long) and
cuts their sockets so the blocked greenlet is released.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from streaming.background import Background
from streaming.registry import Registry

log = logging.getLogger("jobstream.cleanup")


class Cleaner:
    def __init__(
        self,
        registry: Registry,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        extra: Callable[[], None] | None = None,
    ) -> None:
        self.registry = registry
        self.interval = interval_seconds
        self.clock = clock
        self.extra = extra
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
                    "seconds_since_write": round(now - client.last_write, 3),
                    "queue_depth": client.queue.qsize(),
                },
            )
        if self.extra is not None:
            self.extra()
        return len(removed)

    def start(self) -> None:
        self._loop_thread.start()

    def _loop(self, stop: threading.Event) -> None:
        # stop.wait, not sleep: shutdown ends the loop at once.
        while not stop.wait(self.interval):
            try:
                self.run_once(self.clock())
            except Exception:
                log.exception("cleanup sweep failed; will retry next interval")

    def stop(self, timeout: float = 2.0) -> None:
        self._loop_thread.stop(timeout)

    @property
    def running(self) -> bool:
        return self._loop_thread.running
