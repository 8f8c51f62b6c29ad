"""Fleet-wide stream limits and the fleet's stream listing, kept in Redis.

With ``REDIS_URL`` every worker of every host counts its streams in Redis
(keys and scripts: ``streaming.scaleout.fleet_scripts``), so
``STREAM_MAX_CONNECTIONS_PER_IP`` and ``STREAM_MAX_CONNECTIONS_FLEET`` hold
across the fleet, and ``GET /admin/clients`` lists every stream. Counts are
summed over workers whose lease (refreshed every min(1 s, lease / 4)) has not
expired, so a dead worker's or host's slots and entries are gone at most
``STREAM_FLEET_LEASE_SECONDS`` after it died.

The hot path: ``enter`` (``Registry.admit``, outside the registry lock) hands
the address to this worker's agent, a greenlet that sends everything pending
(admissions, releases) as ONE script call, which checks and increments the
fleet and per-address counts atomically. One round trip per admission at
most, fewer in a connect storm (they queue behind the call in flight and go
together), over one connection per worker. ``leave`` never waits.

Redis unreachable: ``enter`` falls back to the instance's own limits (which
always apply too, ``streaming.scaleout.instance``), logs it once and counts
the stream in ``fallbacks``; admissions already waiting give up after the
Redis socket timeout. The agent retries every ``RETRY_SECONDS``; once Redis
answers it rewrites this worker's counts whole (a *resync*: Redis may have
lost them, applied a call whose reply was lost, or reaped them after our
lease lapsed), and admissions count in Redis again.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis

from server.background import Background
from streaming.core.reasons import RefusalReason
from streaming.scaleout.fleet_lease import Breaker, Lease, view_seconds
from streaming.scaleout.fleet_scripts import CALL_SCRIPT, KEYS, LEAVE_SCRIPT, VIEW_SCRIPT, merge_views

if TYPE_CHECKING:
    from streaming.core.client import Client

log = logging.getLogger("jobstream.fleet")


# An admission waits at most this long for the agent (the Redis socket
# timeout is 1 s); then it is let in on the instance's limits.
ADMIT_WAIT_SECONDS = 2.0
# Admissions and releases sent in one call at most.
BATCH = 512
# Dead workers whose fields one refresh deletes.
REAP_PER_CALL = 4
VIEW_YIELD_EVERY = 200  # streams encoded between two yields to the event loop

ADMITTED, CAPACITY, PER_IP, FALLBACK = "1", "c", "i", "f"
_REFUSALS = {CAPACITY: RefusalReason.CAPACITY, PER_IP: RefusalReason.PER_IP}


class _Admission:
    __slots__ = ("abandoned", "done", "ip", "verdict")

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.verdict: str | None = None
        self.abandoned = False
        self.done = threading.Event()


class Fleet:
    """One worker's part of the fleet: its counts, its lease, its view.

    ``enter``/``leave`` are ``Registry``'s gate (installed only when a fleet
    limit is set); ``view`` serves ``/admin/clients``. ``connect`` makes the
    Redis client (inside the worker, after gevent patched).
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        listing: Callable[[], Iterable[dict[str, Any]]],
        *,
        host: str = "",
        lease_seconds: float = 10.0,
        max_fleet: int = 0,
        max_per_ip: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self.listing = listing
        self.host = host or socket.gethostname()
        self.max_fleet = max_fleet
        self.max_per_ip = max_per_ip
        self.limits = bool(max_fleet or max_per_ip)
        self.lease = Lease(lease_seconds, clock)
        self.breaker = Breaker(clock=clock)
        self.clock = clock
        self.pid = os.getpid()
        self.wid = ""
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._admits: list[_Admission] = []
        self._releases: list[str] = []
        # What Redis has been told this worker holds, by address (the agent
        # changes it as it sends; ``leave`` as streams end).
        self._mine: dict[str, int] = {}
        # Streams let in on the instance's limits while Redis was down: not
        # in ``_mine``; folded into it by the next resync.
        self._uncounted: dict[Client, None] = {}
        self._dirty = True  # the first call writes this worker's counts whole
        self._wake = threading.Event()
        self._agent = Background("jobstream-fleet", self._run)
        self._viewer = Background("jobstream-fleet-view", self._build_views)
        self._view_text = ""  # the next view to send, "" when none is ready
        self.fallbacks = 0  # admissions decided on the instance's limits only

    @property
    def up(self) -> bool:
        """Whether admissions count in Redis (else: the instance's limits only)."""
        return self.breaker.up

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.pid = os.getpid()
        self.wid = f"{self.pid}-{secrets.token_hex(4)}"
        self._wake = threading.Event()
        self._redis = self._connect()  # no socket yet: the first command connects
        self._agent.start()
        self._viewer.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the agent and hand this worker's slots back (best effort)."""
        self._viewer.stop(timeout)
        self._agent.request_stop()
        self._wake.set()
        self._agent.join(timeout)
        self._fail_pending()
        if self._redis is None:
            return
        try:
            self._script("leave", LEAVE_SCRIPT)(keys=KEYS, args=[self.wid])
        except redis.RedisError as exc:
            log.warning("fleet: could not hand back slots", extra={"event": "fleet_leave_failed", "error": str(exc)})
        self._redis.close()

    # -- the registry's gate -------------------------------------------------------

    def enter(self, client: Client) -> RefusalReason | None:
        """Count ``client`` fleet-wide, or say why not. May wait for Redis (never
        past ``ADMIT_WAIT_SECONDS``); call it outside any lock."""
        if self.breaker.up and self._agent.running:
            request = _Admission(client.remote_addr)
            with self._lock:
                self._admits.append(request)
            self._wake.set()
            request.done.wait(ADMIT_WAIT_SECONDS)
            with self._lock:
                verdict = request.verdict
                if verdict is None:
                    request.abandoned = True  # the agent hands its slot back if it gets one
                if verdict == ADMITTED:
                    return None
            if verdict in _REFUSALS:
                return _REFUSALS[verdict]
        with self._lock:
            self._uncounted[client] = None
            self.fallbacks += 1
        return None

    def leave(self, client: Client) -> None:
        """``client`` (let in by ``enter``) ended or was refused locally. Never waits."""
        with self._lock:
            if self._uncounted.pop(client, False) is None:
                return
            ip = client.remote_addr
            if not self._forget(ip):
                return
            if self.breaker.up and not self._dirty:
                self._releases.append(ip)
            else:
                self._dirty = True
        self._wake.set()

    def _forget(self, ip: str) -> bool:
        """One stream of ``ip`` less in ``_mine``; ``False`` if it had none. Under the lock."""
        left = self._mine.get(ip, 0) - 1
        if left < 0:
            return False
        if left:
            self._mine[ip] = left
        else:
            del self._mine[ip]
        return True

    # -- the view ----------------------------------------------------------------------

    def view(self, host: str | None = None) -> list[dict[str, Any]] | None:
        """Every live worker's streams (this worker's as of now, the others' as of
        their last refresh); ``None`` when Redis cannot be read."""
        try:
            raw: list[str | None] = self._script("view", VIEW_SCRIPT)(keys=KEYS, args=[])
        except redis.RedisError as exc:
            log.warning("fleet view unavailable", extra={"event": "fleet_view_failed", "error": str(exc)})
            return None
        own = f'"wid": "{self.wid}"'
        others = merge_views((text for text in raw if text and own not in text[:200]), host)
        if host is None or host == self.host:
            others.extend(self._local(list(self.listing())))
        return others

    def _local(self, infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for info in infos:
            info["host"] = self.host
            info["worker_pid"] = self.pid
        return infos

    def _build_views(self, stop: threading.Event) -> None:
        """Encode this worker's view for the agent to send, yielding as it goes
        (10,000 streams take about 0.1 s of CPU: never in one piece)."""
        wait = 0.0
        while not stop.wait(wait):
            head = json.dumps({"wid": self.wid, "host": self.host, "pid": self.pid, "at": time.time()})
            parts = []
            for n, info in enumerate(self.listing(), 1):
                parts.append(json.dumps(info))
                if not n % VIEW_YIELD_EVERY:
                    time.sleep(0)
            # The worker id first, so ``view`` can skip its own entry cheaply.
            self._view_text = f'{head[:-1]}, "clients": [{", ".join(parts)}]}}'
            self._wake.set()
            wait = view_seconds(len(parts), self.lease.every)

    # -- the agent -------------------------------------------------------------------

    def _script(self, name: str, text: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            if self._redis is None:
                raise redis.ConnectionError("the fleet agent has not started")
            script = self._scripts[name] = self._redis.register_script(text)
        return script

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            wait = self.lease.due_in() if self.breaker.up else self.breaker.wait_seconds()
            self._wake.wait(wait)
            self._wake.clear()
            if stop.is_set():
                break
            if not self.breaker.may_try():
                self._fail_pending()
                continue
            try:
                self._call()
            except Exception:
                log.exception("fleet call failed", extra={"event": "fleet_call_failed"})

    def _call(self) -> None:
        refresh = self.lease.due_in() == 0.0 or not self.breaker.up
        with self._lock:
            admits, self._admits = self._admits[:BATCH], self._admits[BATCH:]
            if self.lease.lapsed():
                self._dirty = True
            view, self._view_text = self._view_text, ""
            resync = self._dirty
            if resync:
                for client in self._uncounted:
                    self._mine[client.remote_addr] = self._mine.get(client.remote_addr, 0) + 1
                self._uncounted.clear()
                pairs = [item for ip, n in self._mine.items() for item in (ip, str(n))]
                releases: list[str] = []
                self._releases.clear()
                self._dirty = False
            else:
                pairs = []
                releases, self._releases = self._releases[:BATCH], self._releases[BATCH:]
        if not (admits or releases or refresh or resync or view):
            return
        args = [
            self.wid, int(self.lease.seconds * 1000), self.max_fleet, self.max_per_ip, int(resync), view,
            REAP_PER_CALL if refresh else 0, len(releases), len(pairs) // 2, len(admits), *releases, *pairs, *(a.ip for a in admits),
        ]  # fmt: skip
        sent = self.clock()
        try:
            fresh, verdicts = self._script("call", CALL_SCRIPT)(keys=KEYS, args=args)
        except redis.RedisError as exc:
            self._down(exc, admits)
            return
        self.lease.refreshed(sent, refresh)
        if self.breaker.succeeded():
            log.warning("fleet limits available again", extra={"event": "fleet_up"})
        with self._lock:
            if int(fresh) and not resync:
                self._dirty = True  # our lease was gone: Redis lost or reaped our counts
            for request, verdict in zip(admits, verdicts, strict=False):
                if verdict == ADMITTED:
                    self._mine[request.ip] = self._mine.get(request.ip, 0) + 1
                    if request.abandoned and self._forget(request.ip):
                        self._releases.append(request.ip)  # it was let in locally meanwhile
                request.verdict = verdict
                request.done.set()
        if self._dirty or self._admits or self._releases:
            self._wake.set()

    def _down(self, exc: Exception, admits: list[_Admission]) -> None:
        if self.breaker.failed():
            log.error(
                "fleet limits unavailable: admitting on this instance's limits only",
                extra={"event": "fleet_down", "error": str(exc)},
            )
        with self._lock:
            self._dirty = True  # what Redis holds for us is unknown now
            for request in admits:
                request.verdict = FALLBACK
                request.done.set()
        self._fail_pending()

    def _fail_pending(self) -> None:
        with self._lock:
            admits, self._admits = self._admits, []
            for request in admits:
                request.verdict = FALLBACK
                request.done.set()
