"""The client registry: who is connected, capacity, fan-out, and the sweep.

Constraints that shape this module:

* Under gunicorn's gevent worker ``threading.Lock`` is a gevent lock, so a
  greenlet that blocks while holding it stalls every stream of the worker.
  The lock is therefore held only for dict and counter updates: the capacity
  check and the insert are one step under it, and nothing under it can yield.
* ``fanout`` never takes the lock. It walks an immutable tuple of the
  clients, rebuilt lazily after membership changed (so ``admit`` stays O(1)
  at 10,000 streams), and only calls ``put_nowait``.
* ``sweep(now)`` takes the time as an argument so tests need no sleeping.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streaming.events import Event
from streaming.ids import Key
from streaming.topics import TopicFilter

Clock = Callable[[], float]

# Reasons a stream ends; also the label values of the disconnect metric.
CLIENT = "client"
EVICTED = "evicted"
STALE = "stale"
SHUTDOWN = "shutdown"

# Reasons a stream is refused.
CAPACITY = "capacity"
PER_IP = "per_ip"
DRAINING = "draining"

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
# Seconds per second the fan-out may spend writing to parked streams itself.
DIRECT_BUDGET_SECONDS = 0.5
DIRECT_RUN = 64  # direct writes between two yields to the event loop

# Put in a client queue to wake its generator (shutdown, eviction, gap).
WAKE = object()
# Put in an idle client's queue by the keep-alive tick: write a comment.
KEEPALIVE = object()

_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Client:
    """One open stream. Written by its own generator and by the fan-out."""

    queue: queue.Queue[Any]
    remote_addr: str
    user_agent: str
    topics: TopicFilter = field(default_factory=TopicFilter)
    id: str = field(default_factory=lambda: f"c{next(_ids)}")
    connected_at: float = field(default_factory=time.time)
    connected_mono: float = field(default_factory=time.monotonic)
    last_write: float = field(default_factory=time.monotonic)
    events_sent: int = 0
    # Set by the fan-out when put_nowait found the buffer full.
    full_since: float | None = None
    dropped: int = 0
    gap: bool = False
    # Why the stream must end; the first reason wins.
    closing: str | None = None
    close_retry_ms: int | None = None
    # The raw socket, so a stuck write can be cut off (gunicorn.socket).
    sock: Any = None
    # Stops the hang-up watch (streaming.hangup) when the stream ends.
    unwatch: Callable[[], None] | None = None
    # Direct writes (streaming/direct.py): the OS socket the fan-out may write
    # to while ``parked`` (the generator waits in get() on an empty queue).
    direct: Any = None
    chunked: bool = True
    parked: bool = False
    pending: bytes | None = None  # the rest of a partial direct write
    last_key: Key | None = None  # newest event id written, by either path

    def write_now(self, event: Event, now: float) -> bool:
        """Write ``event`` to the idle stream's socket; ``False``: queue it instead.

        Never blocks: a socket that cannot take the whole chunk keeps the
        rest in ``pending`` for the generator, which sends it before anything
        else; nothing is written directly until it parks again.
        """
        data = event.chunk if self.chunked else event.wire
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

    def stop_watching(self) -> None:
        """End the hang-up watch (idempotent). The watch refers back to the
        client; dropping it here lets a closed stream's memory go at once
        instead of at the next full garbage collection."""
        unwatch, self.unwatch = self.unwatch, None
        if unwatch is not None:
            unwatch()

    def close(self, reason: str, retry_ms: int | None = None) -> None:
        if self.closing is not None:
            return
        self.close_retry_ms = retry_ms
        self.closing = reason
        self.parked = False
        try:
            self.queue.put_nowait(WAKE)
        except queue.Full:
            pass  # not waiting in get(): it will see ``closing`` after its write
        if reason in (EVICTED, STALE) and self.sock is not None:
            # The peer is not reading: a blocked sendall would hold the
            # greenlet and the pool slot. Shutting down the OS socket makes
            # that send fail with EPIPE, which gunicorn ends quietly. (gevent's
            # own shutdown() would cancel the waiter with EBADF instead, which
            # gunicorn logs as a traceback.)
            try:
                getattr(self.sock, "_sock", self.sock).shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    def info(self, now_mono: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "ip": self.remote_addr,
            "user_agent": self.user_agent,
            "connected_at": self.connected_at,
            "topics": list(self.topics.patterns),
            "events_sent": self.events_sent,
            "queue_depth": self.queue.qsize(),
            "lag_seconds": round(max(0.0, now_mono - self.last_write), 3),
        }


class Admission(Protocol):
    """Capacity decided beyond this process (``streaming.instance``).

    ``try_admit``, ``release`` and ``report`` are called under the registry
    lock and must not yield; ``totals`` turns this worker's counters into the
    instance's.
    """

    def try_admit(self, ip: str) -> str | None: ...

    def release(self, ip: str) -> None: ...

    def report(self, counters: dict[str, int]) -> None: ...

    def totals(self, local: dict[str, Any]) -> dict[str, int]: ...


class Registry:
    """Clients of one worker. ``admit`` is the only place a stream is let in:
    by its own counts, or by ``admission`` when workers share the limits."""

    def __init__(
        self,
        *,
        max_connections: int,
        send_timeout_seconds: float,
        keepalive_seconds: float,
        max_connections_per_ip: int = 0,
        clock: Clock = time.monotonic,
        on_close: Callable[[Client, str], None] | None = None,
        on_admit: Callable[[Client, str | None], None] | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_connections_per_ip
        self.send_timeout = send_timeout_seconds
        # No successful write for this long means the peer is gone (issue: dead
        # and half-open connections); a keep-alive is written every interval.
        self.stale_after = 2 * keepalive_seconds + send_timeout_seconds
        self.clock = clock
        self.on_close = on_close
        # Called after every admit decision (None = accepted), outside the lock.
        self.on_admit = on_admit
        self.admission = admission
        self._lock = threading.Lock()
        self._clients: dict[queue.Queue[Any], Client] = {}
        self._per_ip: dict[str, int] = {}
        self._snapshot: tuple[Client, ...] | None = ()
        self.draining = False
        # Counters; changed only under the lock.
        self.accepted = 0
        self.rejected: dict[str, int] = {CAPACITY: 0, PER_IP: 0, DRAINING: 0}
        self.closed: dict[str, int] = {CLIENT: 0, EVICTED: 0, STALE: 0, SHUTDOWN: 0}
        self._retired_events = 0
        self._direct_window = float("-inf")  # start of the current 1 s budget window
        self._direct_spent = 0.0
        self.dropped = 0  # buffer-full puts; fan-out only (one writer per process)

    # -- membership -------------------------------------------------------

    def admit(self, client: Client) -> str | None:
        """Register ``client``; return ``None`` or the reason it was refused.

        The per-IP check counts this worker's streams. A broker that counts
        across workers (Redis) can replace this method; callers only see the
        reason.
        """
        reason = self._admit(client)
        if self.on_admit is not None:
            self.on_admit(client, reason)
        return reason

    def _admit(self, client: Client) -> str | None:
        with self._lock:
            reason = None
            if self.draining:
                reason = DRAINING
            elif self.admission is not None:
                reason = self.admission.try_admit(client.remote_addr)
            elif len(self._clients) >= self.max_connections:
                reason = CAPACITY
            elif self.max_per_ip and self._per_ip.get(client.remote_addr, 0) >= self.max_per_ip:
                reason = PER_IP
            if reason is not None:
                self.rejected[reason] += 1
            else:
                self._clients[client.queue] = client
                self._per_ip[client.remote_addr] = self._per_ip.get(client.remote_addr, 0) + 1
                self._snapshot = None
                self.accepted += 1
            if self.admission is not None:
                self.admission.report(self._counters())
            return reason

    def remove(self, client_queue: queue.Queue[Any], reason: str = CLIENT) -> Client | None:
        """Unregister; idempotent. Returns the client if this call removed it."""
        with self._lock:
            client = self._clients.pop(client_queue, None)
            if client is None:
                return None
            left = self._per_ip[client.remote_addr] - 1
            if left:
                self._per_ip[client.remote_addr] = left
            else:
                del self._per_ip[client.remote_addr]
            self._snapshot = None
            self.closed[reason] = self.closed.get(reason, 0) + 1
            self._retired_events += client.events_sent
            if self.admission is not None:
                self.admission.release(client.remote_addr)
                self.admission.report(self._counters())
        if self.on_close is not None:
            self.on_close(client, reason)
        return client

    def get(self, client_queue: queue.Queue[Any]) -> Client | None:
        return self._clients.get(client_queue)

    def clients(self) -> tuple[Client, ...]:
        """An immutable snapshot of the open streams."""
        snapshot = self._snapshot
        if snapshot is None:
            with self._lock:
                snapshot = self._snapshot = tuple(self._clients.values())
        return snapshot

    def __len__(self) -> int:
        return len(self._clients)

    # -- delivery -----------------------------------------------------------

    def fanout(self, event: Event) -> int:
        """Queue ``event`` for every matching client without ever waiting.

        A full buffer drops the event for that client and flags a gap, which
        its generator heals from history; a buffer full for longer than the
        send timeout gets the client evicted. Returns the number queued.
        """
        queued = 0
        now = started = self.clock()
        # Direct writes cost one send per stream per event; queued events are
        # drained in batches. Past its budget of CPU per second (overload:
        # thousands of streams at high rates) the fan-out queues instead.
        if started - self._direct_window >= 1.0:
            self._direct_window, self._direct_spent = started, 0.0
        direct = self._direct_spent < DIRECT_BUDGET_SECONDS
        wrote = 0
        evict: list[Client] = []
        topic = event.topic
        key = event.key
        for client in self.clients():
            if not client.topics.matches(topic):
                continue
            if client.last_key is not None and key <= client.last_key:
                # Already sent: with Redis a stream's gap heal reads the stream
                # itself and can run ahead of this worker's reader.
                continue
            # Idle stream: write now instead of waking its greenlet (no
            # switch, no gunicorn write path; see streaming/direct.py).
            if direct and client.parked and not client.gap and client.write_now(event, now):
                queued += 1
                wrote += 1
                if not wrote % DIRECT_RUN:
                    # Hundreds of sends in a row would hold /health and every
                    # other request; yield (the publish lock stays held, so
                    # each stream's order is unchanged).
                    time.sleep(0)
                continue
            client.parked = False  # from here on its generator writes, in order
            try:
                client.queue.put_nowait(event)
            except queue.Full:
                client.gap = True
                client.dropped += 1
                self.dropped += 1
                if client.full_since is None:
                    client.full_since = now
                elif now - client.full_since > self.send_timeout:
                    evict.append(client)
                continue
            queued += 1
            if client.full_since is not None:
                client.full_since = None
        if wrote:
            self._direct_spent += self.clock() - started
        for client in evict:
            self.evict(client, EVICTED)
        return queued

    def evict(self, client: Client, reason: str) -> None:
        if self.remove(client.queue, reason) is not None:
            client.close(reason)

    def keepalive(self, now: float, interval: float) -> int:
        """Ask every stream idle for ``interval`` to write a keep-alive comment."""
        count = 0
        for client in self.clients():
            if now - client.last_write >= interval and client.queue.empty():
                client.parked = False
                try:
                    client.queue.put_nowait(KEEPALIVE)
                except queue.Full:
                    continue  # not idle after all
                count += 1
        return count

    def sweep(self, now: float) -> list[tuple[Client, str]]:
        """Remove stale clients and clients whose buffer stayed full too long."""
        removed: list[tuple[Client, str]] = []
        for client in self.clients():
            if client.closing is not None:
                continue
            if now - client.last_write > self.stale_after:
                reason = STALE
            elif client.full_since is not None and now - client.full_since > self.send_timeout:
                reason = EVICTED
            else:
                continue
            if self.remove(client.queue, reason) is not None:
                client.close(reason)
                removed.append((client, reason))
        return removed

    def close_all(
        self, reason: str, retry_ms: Callable[[], int] | None = None, clients: Iterable[Client] | None = None
    ) -> int:
        """Ask streams to end (they send their final frame and unregister)."""
        count = 0
        for client in self.clients() if clients is None else clients:
            client.close(reason, retry_ms() if retry_ms is not None else None)
            count += 1
        return count

    def begin_drain(self) -> None:
        with self._lock:
            self.draining = True

    # -- reporting ----------------------------------------------------------

    def _counters(self) -> dict[str, int]:
        """What the instance table sums; called under the lock."""
        return {
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "evicted": self.closed.get(EVICTED, 0),
            "stale": self.closed.get(STALE, 0),
        }

    def stats(self) -> dict[str, Any]:
        with self._lock:
            # Snapshot and retired total read together: a client removed in
            # between would otherwise be counted twice, and total_messages
            # (exported as a counter) would go backwards on the next call.
            clients = tuple(self._clients.values())
            retired = self._retired_events
            counters = {
                "accepted": self.accepted,
                "rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(self.rejected),
                "evicted": self.closed.get(EVICTED, 0),
                "stale": self.closed.get(STALE, 0),
                "closed_by_reason": dict(self.closed),
            }
        live = sum(c.events_sent for c in clients)
        stats: dict[str, Any] = {
            "active_connections": len(clients),
            "total_messages": retired + live,
            "max_connections": self.max_connections,
            "draining": self.draining,
            "dropped": self.dropped,
            **counters,
        }
        if self.admission is not None:
            # Instance-wide totals; the by-reason breakdowns stay this worker's.
            totals = self.admission.totals(stats)
            stats["active_connections"] = totals["active"]
            stats["workers"] = totals["workers"]
            for name in ("total_messages", "dropped", "accepted", "rejected", "evicted", "stale"):
                stats[name] = totals[name]
        return stats
