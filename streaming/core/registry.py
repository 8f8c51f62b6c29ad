"""The client registry: who is connected, capacity, fan-out, and the sweep.

Constraints that shape this module:

* Under gunicorn's gevent worker ``threading.Lock`` is a gevent lock, so a
  greenlet that blocks while holding it stalls every stream of the worker.
  The lock is therefore held only for dict and counter updates: the capacity
  check and the insert are one step under it, and nothing under it can yield.
* ``fanout`` does not hold the lock while it offers events. It walks an
  immutable tuple of the clients, rebuilt lazily (under the lock) after
  membership changed, so ``admit`` stays O(1) at 10,000 streams; and it
  never waits: ``StreamWriter.offer`` queues with ``put_nowait`` or makes one
  non-blocking send.
* ``sweep(now)`` takes the time as an argument so tests need no sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from streaming.core.client import Client
from streaming.core.events import Event
from streaming.core.reasons import CloseReason, RefusalReason
from streaming.core.topics import INTERNAL_TOPIC_PREFIX
from streaming.core.writer import DROPPED, KEEPALIVE, WRITTEN, DirectBudget

Clock = Callable[[], float]

DIRECT_RUN = 64  # direct writes between two yields to the event loop


class Admission(Protocol):
    """Capacity decided beyond this process (``streaming.scaleout.instance``).

    ``try_admit``, ``release`` and ``report`` are called under the registry
    lock and must not yield; ``totals`` turns this worker's counters into the
    instance's.
    """

    def try_admit(self, ip: str) -> RefusalReason | None: ...

    def release(self, ip: str) -> None: ...

    def report(self, counters: dict[str, int]) -> None: ...

    def totals(self, local: dict[str, Any]) -> dict[str, int]: ...


class Gate(Protocol):
    """Limits decided beyond this host (``streaming.scaleout.fleet``).

    ``enter`` may wait (a Redis round trip), so it is called outside the lock,
    before the host's own checks; ``leave`` never waits.
    """

    def enter(self, client: Client) -> RefusalReason | None: ...

    def leave(self, client: Client) -> None: ...


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
        on_close: Callable[[Client, CloseReason], None] | None = None,
        on_admit: Callable[[Client, RefusalReason | None], None] | None = None,
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
        self.gate: Gate | None = None
        self._lock = threading.Lock()
        self._clients: dict[Client, None] = {}  # ordered by admission
        self._per_ip: dict[str, int] = {}
        self._snapshot: tuple[Client, ...] | None = ()
        # Streams opened with a token: the only ones ``expire`` looks at.
        self._granted: dict[Client, None] = {}
        self.draining = False
        # Counters; changed only under the lock.
        self.accepted = 0
        self.rejected: dict[str, int] = dict.fromkeys(RefusalReason, 0)
        self.closed: dict[str, int] = dict.fromkeys(
            (
                CloseReason.CLIENT,
                CloseReason.EVICTED,
                CloseReason.STALE,
                CloseReason.SHUTDOWN,
                CloseReason.TOKEN_EXPIRED,
            ),
            0,
        )
        self._retired_events = 0
        self._retired_conflated = 0
        self.budget = DirectBudget(clock)
        self.dropped = 0  # buffer-full puts; fan-out only (one writer per process)
        # Who hears the server's own events (``listen_internal``); no stream does.
        self._internal: tuple[Callable[[Event], None], ...] = ()

    # -- membership -------------------------------------------------------

    def admit(self, client: Client) -> RefusalReason | None:
        """Register ``client``; return ``None`` or the reason it was refused.

        The per-IP check counts this worker's streams; with several workers
        ``admission`` (``streaming.scaleout.instance``) counts the instance's.
        """
        gate = self.gate
        reason = self._admit(client) if gate is None else self._admit_through(gate, client)
        if self.on_admit is not None:
            self.on_admit(client, reason)
        return reason

    def _admit(self, client: Client) -> RefusalReason | None:
        with self._lock:
            reason: RefusalReason | None = None
            if self.draining:
                reason = RefusalReason.DRAINING
            elif self.admission is not None:
                reason = self.admission.try_admit(client.remote_addr)
            elif len(self._clients) >= self.max_connections:
                reason = RefusalReason.CAPACITY
            elif self.max_per_ip and self._per_ip.get(client.remote_addr, 0) >= self.max_per_ip:
                reason = RefusalReason.PER_IP
            if reason is not None:
                self.rejected[reason] += 1
            else:
                self._clients[client] = None
                if client.grant is not None:
                    self._granted[client] = None
                self._per_ip[client.remote_addr] = self._per_ip.get(client.remote_addr, 0) + 1
                self._snapshot = None
                self.accepted += 1
            if self.admission is not None:
                self.admission.report(self._counters())
            return reason

    def _admit_through(self, gate: Gate, client: Client) -> RefusalReason | None:
        """The fleet's limits (``gate``, which may wait), then the host's."""
        if self.draining:
            return self._admit(client)
        reason = gate.enter(client)
        if reason is None:
            reason = self._admit(client)
            if reason is not None:
                gate.leave(client)
            return reason
        with self._lock:
            self.rejected[reason] += 1
        return reason

    def remove(self, client: Client, reason: CloseReason = CloseReason.CLIENT) -> bool:
        """Unregister; idempotent. ``True`` if this call removed it."""
        with self._lock:
            if self._clients.pop(client, False) is False:
                return False
            if client.grant is not None:
                self._granted.pop(client, None)
            left = self._per_ip[client.remote_addr] - 1
            if left:
                self._per_ip[client.remote_addr] = left
            else:
                del self._per_ip[client.remote_addr]
            self._snapshot = None
            self.closed[reason] = self.closed.get(reason, 0) + 1
            self._retired_events += client.writer.events_sent
            self._retired_conflated += client.writer.conflated
            if self.admission is not None:
                self.admission.release(client.remote_addr)
                self.admission.report(self._counters())
        if self.gate is not None:
            self.gate.leave(client)
        if self.on_close is not None:
            self.on_close(client, reason)
        return True

    def __contains__(self, client: Client) -> bool:
        return client in self._clients

    def clients(self) -> tuple[Client, ...]:
        """An immutable snapshot of the open streams."""
        snapshot = self._snapshot
        if snapshot is None:
            with self._lock:
                snapshot = self._snapshot = tuple(self._clients)
        return snapshot

    def __len__(self) -> int:
        return len(self._clients)

    # -- delivery -----------------------------------------------------------

    def listen_internal(self, listener: Callable[[Event], None]) -> None:
        """Hand every event on an internal topic (``INTERNAL_TOPIC_PREFIX``) to
        ``listener`` instead of the streams; it runs inside ``fanout`` and must not block."""
        self._internal = (*self._internal, listener)

    def fanout(self, event: Event) -> int:
        """Offer ``event`` to every matching stream's writer without ever waiting.

        A private event goes only to streams that ``Client.may_read`` it.
        A full buffer drops the event for that stream and flags a gap, which
        its generator heals from history; a buffer full for longer than the
        send timeout gets the stream evicted. Returns the number delivered.
        An event on an internal topic reaches no stream, whatever its filter
        (``topic=*`` included): only the ``listen_internal`` listeners.
        """
        if event.topic.startswith(INTERNAL_TOPIC_PREFIX):
            for listener in self._internal:
                listener(event)
            return 0
        delivered = wrote = 0
        now = self.clock()
        direct = self.budget.available(now)
        evict: list[Client] = []
        topic = event.topic
        clients: Iterable[Client] = self.clients()
        if event.private:
            # Decided once per event, so a public one costs no more per stream
            # than before private events existed.
            clients = [c for c in clients if c.topics.matches(topic) and c.may_read(event)]
        for client in clients:
            if not client.topics.matches(topic):
                continue
            writer = client.writer
            outcome = writer.offer(event, now, direct)
            if outcome > DROPPED:
                delivered += 1
                if outcome == WRITTEN:
                    wrote += 1
                    if not wrote % DIRECT_RUN:
                        # Hundreds of sends in a row would hold /health and
                        # every other request; yield (the publish lock stays
                        # held, so each stream's order is unchanged).
                        time.sleep(0)
            elif outcome == DROPPED:
                self.dropped += 1
                full_since = writer.full_since
                if full_since is not None and now - full_since > self.send_timeout:
                    evict.append(client)
        if wrote:
            self.budget.charge(now)
        for client in evict:
            self.evict(client, CloseReason.EVICTED)
        return delivered

    def evict(self, client: Client, reason: CloseReason) -> None:
        if self.remove(client, reason):
            client.close(reason)

    def keepalive(self, now: float, interval: float) -> int:
        """Ask every stream idle for ``interval`` to write a keep-alive comment."""
        count = 0
        for client in self.clients():
            writer = client.writer
            if now - writer.last_write >= interval and writer.queue.empty() and writer.nudge(KEEPALIVE):
                count += 1
        return count

    def expire(self, now_epoch: float) -> list[Client]:
        """Ask every stream whose token reached its ``exp`` to end.

        ``now_epoch`` is wall-clock time (``exp`` is). Only streams opened with
        a token are looked at; each then writes ``event: token-expired``.
        """
        with self._lock:
            granted = tuple(self._granted)
        expired = []
        for client in granted:
            grant = client.grant
            if grant is not None and grant.exp <= now_epoch and client.closing is None:
                client.close(CloseReason.TOKEN_EXPIRED)
                expired.append(client)
        return expired

    def sweep(self, now: float) -> list[tuple[Client, CloseReason]]:
        """Remove stale clients and clients whose buffer stayed full too long."""
        removed: list[tuple[Client, CloseReason]] = []
        for client in self.clients():
            if client.closing is not None:
                continue
            writer = client.writer
            if now - writer.last_write > self.stale_after:
                reason = CloseReason.STALE
            elif writer.full_since is not None and now - writer.full_since > self.send_timeout:
                reason = CloseReason.EVICTED
            else:
                continue
            if self.remove(client, reason):
                client.close(reason)
                removed.append((client, reason))
        return removed

    def close_all(
        self, reason: CloseReason, retry_ms: Callable[[], int] | None = None, clients: Iterable[Client] | None = None
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
            "evicted": self.closed[CloseReason.EVICTED],
            "stale": self.closed[CloseReason.STALE],
        }

    def stats(self, instance: bool = True) -> dict[str, Any]:
        """This worker's counters, or (``instance``, with shared limits) the
        instance's totals in place of this worker's."""
        with self._lock:
            # Snapshot and retired total read together: a client removed in
            # between would otherwise be counted twice, and total_messages
            # (exported as a counter) would go backwards on the next call.
            clients = tuple(self._clients)
            retired = self._retired_events
            retired_conflated = self._retired_conflated
            counters = {
                "accepted": self.accepted,
                "rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(self.rejected),
                "evicted": self.closed[CloseReason.EVICTED],
                "stale": self.closed[CloseReason.STALE],
                "closed_by_reason": dict(self.closed),
            }
        live = sum(c.writer.events_sent for c in clients)
        stats: dict[str, Any] = {
            "active_connections": len(clients),
            "total_messages": retired + live,
            "max_connections": self.max_connections,
            "draining": self.draining,
            "dropped": self.dropped,
            "conflated": retired_conflated + sum(c.writer.conflated for c in clients),
            # This worker's streams by transport (SSE, WebSocket).
            "by_transport": {
                "sse": sum(c.transport == "sse" for c in clients),
                "ws": sum(c.transport == "ws" for c in clients),
            },
            **counters,
        }
        if instance and self.admission is not None:
            # Instance-wide totals; the by-reason breakdowns stay this worker's.
            totals = self.admission.totals(stats)
            stats["active_connections"] = totals["active"]
            stats["workers"] = totals["workers"]
            for name in ("total_messages", "dropped", "conflated", "accepted", "rejected", "evicted", "stale"):
                stats[name] = totals[name]
        return stats
