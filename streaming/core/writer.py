"""Everything that writes to one stream: its buffer, and its socket when idle.

Each open stream owns one ``StreamWriter``. The fan-out offers it every
matching event (``offer``); the writer either sends the event to the socket
itself or queues it for the stream's generator, which hands its batches to
gunicorn. Once a stream is open, this module is the only place its socket is
written outside gunicorn (the fast path sends the response head together with
the opening, ``streaming.transport.fastpath``), and the only place its buffer
is filled.

Direct writes. At low event rates each event would otherwise wake every
stream's greenlet once: a switch, a generator resume and gunicorn's chunked
write, about 40 us each in Python, so the thousandth tab heard of a job tens
of milliseconds after the first. A stream whose generator waits in ``get()``
on an empty queue is *parked*; for it ``offer`` sends the event's pre-framed
chunk (``Event.chunk``) with one non-blocking ``send`` and returns.

* Only while parked. ``offer`` clears ``parked`` before it queues anything
  (an event it could not write, a keep-alive, a wake-up), so from then on
  the generator writes, after everything written directly.
* Never blocking. A socket that takes nothing gets the event queued as
  usual; one that takes part of it leaves the rest in ``pending``, which the
  generator sends (``flush_pending``) before anything else.
* ``last_key`` is shared by both paths, so replays, gap heals and the
  de-duplication see direct writes too.
* Only under gevent (the fan-out and the generator then never run at the
  same time), only for plain TCP sockets and HTTP/1.x, where the framing is
  known: chunked for HTTP/1.1, raw bytes for HTTP/1.0, as gunicorn does.
* Within a CPU budget (``DirectBudget``): past it, under overload, events are
  queued and each generator drains them in one write per wake-up.

A full buffer. First the buffer is *conflated*: of the queued low-priority
events with a conflation key (a job's progress, keyed by job id), only the
newest per key stays, and none of the new event's key if it is one of them,
since it supersedes them. The rest keep their order, so ids stay
increasing and high-priority events are never replaced or reordered. If
that made room, the event is queued (``CONFLATED``). Otherwise it is dropped
for this stream: a ``gap`` is flagged (the generator replays it from history
before anything newer) and the writer records since when the buffer has been
full; the registry evicts a stream that stays full past
``STREAM_SEND_TIMEOUT``.
"""

from __future__ import annotations

import _socket
import contextlib
import queue
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

from streaming.core.events import Event
from streaming.core.ids import Key

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

# Put in a stream's queue to wake its generator (shutdown, eviction, gap).
WAKE = object()
# Put in an idle stream's queue by the keep-alive tick: write a comment.
KEEPALIVE = object()

# Keys a background stream remembers before it forgets those past their interval.
MAX_SPACED_KEYS = 1024

# Seconds per second the fan-out may spend writing to parked streams itself.
DIRECT_BUDGET_SECONDS = 0.5


# What ``StreamWriter.offer`` did with an event. Plain ints, not an enum: the
# fan-out compares one per stream per event, and an enum member lookup costs
# more than the rest of the comparison.
# Ordered: anything above DROPPED was delivered.
SPACED = -2  # a low event a background stream skips (one per key per interval went out)
SKIPPED = -1  # already sent (at or below ``last_key``)
DROPPED = 0  # buffer full: a gap to heal
QUEUED = 1
WRITTEN = 2  # sent to the socket by the fan-out itself
CONFLATED = 3  # queued into a full buffer after older low events of a key were removed


class Buffer(Protocol):
    """A stream's bounded buffer: ``queue.Queue(maxsize)`` or ``streaming.core.buffer.GeventBuffer``."""

    queue: Any  # the items, oldest first

    def put_nowait(self, item: Any) -> None: ...
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...
    def get_nowait(self) -> Any: ...
    def empty(self) -> bool: ...
    def qsize(self) -> int: ...


class StreamWriter:
    """One stream's buffer and direct-write state. Written by the fan-out and
    by the stream's generator, which under gevent never run at once."""

    # One per open stream: slots keep it small.
    __slots__ = (
        "chunked",
        "conflated",
        "direct",
        "dropped",
        "events_sent",
        "frame",
        "full_since",
        "gap",
        "last_key",
        "last_write",
        "parked",
        "pending",
        "queue",
        "sock",
        "spaced",
        "spacing",
    )

    def __init__(self, buffer: Buffer, sock: Any = None, last_write: float | None = None) -> None:
        self.queue = buffer
        # gunicorn's socket: the generator's own sends, and the socket a stuck
        # stream is shut down on.
        self.sock = sock
        # The OS socket the fan-out may write to while ``parked`` (or None).
        self.direct: Any = None
        self.chunked = True
        # How a direct write frames an event for another transport (a
        # WebSocket text frame); None: the SSE chunk (or raw bytes on HTTP/1.0).
        self.frame: Callable[[Event], bytes] | None = None
        self.parked = False
        self.pending: bytes | None = None  # the rest of a partial direct write
        self.last_key: Key | None = None  # newest event id written, by either path
        self.last_write = time.monotonic() if last_write is None else last_write
        self.events_sent = 0
        self.full_since: float | None = None  # set while put_nowait finds the buffer full
        self.dropped = 0
        self.conflated = 0  # queued events removed because a newer one of their key came
        # A background stream (``space_out``): low events at most once per key
        # per ``spacing`` seconds; ``spaced``: key -> when one last went out.
        self.spacing: float | None = None
        self.spaced: dict[str, float] | None = None  # None on foreground streams: no dict each
        self.gap = False

    def enable_direct(self, environ: dict[str, Any]) -> None:
        """Allow direct writes when the connection is one whose framing is known."""
        self.direct, self.chunked = direct_socket(self.sock, environ)

    def space_out(self, seconds: float | None) -> None:
        """Background (``seconds``) or foreground (``None``) quality of service."""
        self.spacing = seconds
        self.spaced = {} if seconds is not None else None

    # -- the fan-out's side ------------------------------------------------

    def offer(self, event: Event, now: float, direct: bool) -> int:
        """Write ``event`` now if parked (and ``direct``), else queue it; never blocks."""
        last = self.last_key
        if last is not None and event.key <= last:
            # Already sent: with Redis a stream's gap heal reads the stream
            # itself and can run ahead of this worker's reader.
            return SKIPPED
        if self.spacing is not None and event.low and not self._due(event, now):
            return SPACED
        if direct and self.parked and not self.gap and self._write_now(event, now):
            return WRITTEN
        self.parked = False  # from here on the generator writes, in order
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            if self.full_since is None:
                self.full_since = now  # still full after a conflation: the reader has not read
            if self._conflate(event):
                self.queue.put_nowait(event)
                return CONFLATED
            self.gap = True
            self.dropped += 1
            return DROPPED
        self.full_since = None
        return QUEUED

    def _due(self, event: Event, now: float) -> bool:
        """Whether a background stream takes this low event now (and remember it)."""
        spaced = self.spaced
        assert self.spacing is not None and spaced is not None
        key = event.conflate or event.topic
        last = spaced.get(key)
        if last is not None and now - last < self.spacing:
            return False
        if len(spaced) >= MAX_SPACED_KEYS:
            # Keys whose interval is over would be sent anyway: forget them.
            self.spaced = spaced = {k: t for k, t in spaced.items() if now - t < self.spacing}
        spaced[key] = now
        return True

    def _conflate(self, event: Event) -> int:
        """Keep only the newest queued low event per conflation key (none of
        ``event``'s key when it has one); returns how many were removed. Only
        on a full buffer: at most ``STREAM_CLIENT_BUFFER`` items, rarely."""
        superseded = {event.conflate} if event.low and event.conflate is not None else set()
        q = self.queue
        # The stdlib queue's lock; the gevent buffer (patched) has none and
        # needs none: the fan-out and the generator never run at once there.
        mutex = getattr(q, "mutex", None)
        with mutex if mutex is not None else contextlib.nullcontext():
            items = q.queue
            kept: list[Any] = []
            for item in reversed(items):
                key = getattr(item, "conflate", None)  # markers (WAKE, KEEPALIVE) have none
                if key is not None:
                    if key in superseded:
                        continue
                    superseded.add(key)
                kept.append(item)
            removed = len(items) - len(kept)
            if removed:
                items.clear()
                items.extend(reversed(kept))
                if mutex is not None and isinstance(q, queue.Queue):
                    q.not_full.notify(removed)
        self.conflated += removed
        return removed

    def enable_direct_frames(self, sock: Any, frame: Callable[[Event], bytes]) -> None:
        """Direct writes of ``frame(event)`` to ``sock`` (an OS socket), under gevent only."""
        self.direct = sock if sock is not None and gevent_patched() else None
        self.frame = frame

    def _write_now(self, event: Event, now: float) -> bool:
        frame = self.frame
        data = frame(event) if frame is not None else event.chunk if self.chunked else event.wire
        try:
            sent = self.direct.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.direct = None  # gone: the queued path's write fails and ends it
            return False
        self.last_key = event.key
        self.events_sent += 1
        self.last_write = now
        if sent < len(data):
            self.pending = data[sent:]
            self.parked = False
            self.queue.put_nowait(WAKE)  # the queue is empty while parked
        return True

    def nudge(self, marker: object) -> bool:
        """Queue a marker (``KEEPALIVE``, ``WAKE``) unless the buffer is full."""
        self.parked = False
        try:
            self.queue.put_nowait(marker)
        except queue.Full:
            return False
        return True

    def mark_gap(self) -> None:
        """Events may be missing (the reader fell behind a trim): heal from history."""
        self.gap = True
        self.nudge(WAKE)  # a full queue wakes its generator anyway

    # -- the generator's side ------------------------------------------------

    def park(self) -> None:
        """About to wait on an empty queue: let the fan-out write directly.
        Under gevent nothing runs between this and ``get()`` blocking."""
        self.parked = self.direct is not None and not self.gap and self.queue.empty()

    def flush_pending(self, now: float) -> None:
        """Send the rest of a direct write that only partly fit (an already
        framed chunk) before anything else goes out."""
        rest, self.pending = self.pending, None
        if rest is not None:
            self.sock.sendall(rest)
            self.last_write = now

    def shut_down(self, how: int = socket.SHUT_RDWR) -> None:
        """Shut the OS socket down (idempotent, ignores a peer already gone).

        For a peer that is not reading, a blocked ``sendall`` would hold the
        greenlet and the pool slot: shutting down the OS socket makes that
        send fail with EPIPE, which gunicorn ends quietly (gevent's own
        ``shutdown()`` would cancel the waiter with EBADF instead, which
        gunicorn logs as a traceback).
        """
        if self.sock is None:
            return
        try:
            getattr(self.sock, "_sock", self.sock).shutdown(how)
        except OSError:
            pass  # already closed by the peer


class DirectBudget:
    """How much CPU per second the fan-out may spend on direct writes.

    Direct writes cost one send per stream per event; queued events are
    drained in batches. Past this budget (overload: thousands of streams at
    high rates) the fan-out queues instead. One per registry.
    """

    __slots__ = ("clock", "seconds", "spent", "window")

    def __init__(self, clock: Callable[[], float], seconds: float = DIRECT_BUDGET_SECONDS) -> None:
        self.clock = clock
        self.seconds = seconds
        self.window = float("-inf")  # start of the current 1 s window
        self.spent = 0.0

    def available(self, now: float) -> bool:
        if now - self.window >= 1.0:
            self.window, self.spent = now, 0.0
        return self.spent < self.seconds

    def charge(self, started: float) -> None:
        self.spent += self.clock() - started


def direct_socket(sock: Any, environ: dict[str, Any]) -> tuple[Any, bool]:
    """The OS socket the fan-out may write to (or ``None``) and whether to chunk."""
    protocol = environ.get("SERVER_PROTOCOL")
    if sock is None or not gevent_patched() or protocol not in ("HTTP/1.0", "HTTP/1.1"):
        return None, True
    if isinstance(sock, ssl.SSLSocket) or environ.get("HTTP_VERSION") == "2":
        return None, True
    raw = getattr(sock, "_sock", sock)
    # _socket.socket: after patching, socket.socket is gevent's wrapper class.
    if not isinstance(raw, _socket.socket) or raw.type != socket.SOCK_STREAM:
        return None, True
    return raw, protocol == "HTTP/1.1"


_patched = False


def gevent_patched() -> bool:
    """Whether gevent has patched ``socket``: asked a few times per connect.
    Patching is never undone, so a yes is remembered; a no is asked again
    (a process may patch after importing this module)."""
    global _patched
    if _patched:
        return True
    try:
        from gevent import monkey
    except ImportError:
        return False
    _patched = bool(monkey.is_module_patched("socket"))
    return _patched
