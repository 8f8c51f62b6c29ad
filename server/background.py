"""A named daemon thread (a greenlet once gevent patched) with a stop signal.

The target receives a ``threading.Event`` and must wait on it (``stop.wait``),
never ``sleep``, so ``stop`` ends it at once. Standard library only, and
nothing is created before ``start``: under gevent the thread and the event
must be made after patching.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        self.name = name
        self.target = target
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.target, args=(self._stop,), name=self.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Set the stop signal without waiting (for a target that also waits on
        something else, which the caller then wakes)."""
        if self._stop is not None:
            self._stop.set()

    def join(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def stop(self, timeout: float = 2.0) -> None:
        self.request_stop()
        self.join(timeout)

    @property
    def started(self) -> bool:
        """``start`` was called (and ``stop`` has not finished since)."""
        return self._thread is not None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
