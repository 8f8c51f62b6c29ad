"""One stream's bounded buffer: ``queue.Queue(maxsize)``, lighter under gevent.

Every open stream has a buffer of ``STREAM_CLIENT_BUFFER`` (50) items that
the fan-out fills without waiting and the stream's generator drains, waiting
while it is empty. Unpatched (unit tests, ``flask run``) that is the
stdlib's ``queue.Queue(maxsize)``, which threads need.

Under gevent ``queue.Queue`` is gevent's, and it costs 2.5 KB before it
holds anything (three deques of 64 slots: items, getters, putters), plus a
second waiter while the stream is parked in ``get``: a quarter of what a
stream holds. ``GeventBuffer`` keeps the same contract in a list and one
gevent ``Waiter`` that exists only while the generator waits:

* bounded: ``put_nowait`` raises ``queue.Full`` at ``maxsize`` items, as
  ``queue.Queue`` does; nothing here blocks a producer, and the code never
  calls a blocking ``put`` (the fan-out must never wait for a reader);
* ``get()`` waits until an item comes, ``get(timeout=s)`` raises
  ``queue.Empty`` after ``s`` seconds, ``get_nowait()`` raises
  ``queue.Empty`` at once;
* one consumer: each stream's buffer is drained by its own greenlet only.

It is correct because all its callers are greenlets of one OS thread (the
fan-out, the keep-alive tick, hang-up callbacks, the generator): nothing
runs between a check and the change that follows it. Handlers in real OS
threads never touch streams (``jobs/threads.py`` reports to the hub), which
is also what gevent's own queue requires. The generator is woken through a
hub callback, as gevent's queue does, so the producer never switches away.
"""

from __future__ import annotations

import queue
from typing import Any

from streaming.core.writer import gevent_patched


def new_buffer(maxsize: int) -> Any:
    """A stream's buffer of ``maxsize`` items for the way this process runs."""
    return GeventBuffer(maxsize) if gevent_patched() else queue.Queue(maxsize=maxsize)


class GeventBuffer:
    """``queue.Queue(maxsize)``'s non-blocking puts and (timed) gets, for one
    consuming greenlet. ``queue`` is the items, oldest first (as the stdlib's
    attribute; ``StreamWriter._conflate`` rewrites it in place)."""

    # One per open stream: slots; the waiter and the hub only while waiting.
    __slots__ = ("_waiter", "maxsize", "queue")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        # A list, not a deque: an empty deque allocates a 64-slot block (760 B).
        # pop(0) moves at most maxsize pointers.
        self.queue: list[Any] = []
        self._waiter: Any = None

    def qsize(self) -> int:
        return len(self.queue)

    def empty(self) -> bool:
        return not self.queue

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self.queue)

    def put_nowait(self, item: Any) -> None:
        items = self.queue
        if 0 < self.maxsize <= len(items):
            raise queue.Full
        items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.hub.loop.run_callback(waiter.switch, None)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        items = self.queue
        while not items:
            if not block:
                raise queue.Empty
            from gevent.hub import Waiter, get_hub

            hub = get_hub()
            waiter = self._waiter = Waiter(hub)
            timer = None
            if timeout is not None:
                timer = hub.loop.timer(max(0.0, timeout))
                timer.start(waiter.switch, None)
            try:
                waiter.get()  # until put_nowait (or the timer) switches back
            finally:
                self._waiter = None
                if timer is not None:
                    timer.close()
            if timeout is not None and not items:
                raise queue.Empty
        return items.pop(0)
