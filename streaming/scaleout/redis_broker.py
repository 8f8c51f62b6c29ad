"""The Redis Stream broker: one event log for every worker and every host.

* ``publish`` is ``XADD jobstream:events MAXLEN ~ N * topic .. event .. data ..``
  (and ``p 1`` for a private event, ``o <sub>`` for an owned one, ``l <key>``
  for a low-priority one; a missing ``p`` is public, as in entries written
  before private events, a missing ``l`` high priority);
  Redis assigns the entry id and that id is the SSE ``id`` (``streaming.core.ids``
  follows the same ``<ms>-<seq>`` rule). Publishing does not fan out: every
  worker, the publisher's included, gets the event from its reader, so all of
  them deliver in the stream's order.
* One reader per worker process (a greenlet under gevent) loops on
  ``XREAD BLOCK`` from the last id it delivered and calls
  ``Registry.fanout``. On an error it reports unhealthy, backs off (capped
  exponential) and resumes from that same id, so an outage skips nothing
  that Redis accepted (provided ``MAXLEN`` did not trim it meanwhile; if it
  did, every client is flagged with a gap and heals or resets from replay).
* ``replay`` reads the stream itself, so an id issued by any worker or host
  resumes anywhere. Its rules are ``History.after``'s. Redis does not record
  the newest *trimmed* id (``max-deleted-entry-id`` counts only ``XDEL``), so
  the floor is taken from what it does report: an id still in the stream
  resumes; ``0-0`` resumes while nothing was ever trimmed
  (``entries-added == length``); an id older than the first retained entry
  of a trimmed stream is ``expired``; anything else (newer than the last id,
  or never issued) is ``unknown``. Unlike the in-memory window, the newest
  trimmed id itself gets a reset rather than an empty replay. XINFO and
  XRANGE run in one MULTI, so a trim cannot fall between them. ``MAXLEN ~``
  trims whole radix nodes, so the window holds *at least*
  ``STREAM_HISTORY_SIZE`` events.

The client comes from ``streaming.scaleout.redis_client`` (one Redis,
Sentinel or Cluster; short timeouts, no hidden retries): a stopped Redis must
turn a publish into a prompt 503, not a hang. With ``REDIS_MIN_REPLICAS_ACK``
each ``XADD`` is confirmed by ``WAIT`` before the publish returns. A timed-out
or unconfirmed ``XADD`` may still be applied (and delivered), so a 503 means
"not confirmed", not "certainly dropped". After a Sentinel failover the
reader's next ``XREAD`` goes to the new primary and resumes from its cursor. After the reader has seen Redis
fail, publish and replay raise ``BrokerUnavailable`` at once until it
reconnects; a stream that needed replay then ends with ``retry:`` and keeps
its ``Last-Event-ID`` for the next attempt (``streaming.transport.stream``).

Canaries (internal topics, ``streaming.ops.canary``) go to ``<key>:canary``,
read by the same ``XREAD``: they take no place in the replay window, and a
publish of one does not wait for the readers.

The connection pool is made on first use inside the worker, after gevent
patched sockets; nothing here runs at import or in the gunicorn master.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Protocol

import redis

from server.background import Background
from server.redis_url import RedisTarget, as_target
from streaming.core.broker import BrokerUnavailable
from streaming.core.events import PUBLIC, Delivery, Event
from streaming.core.history import EXPIRED, UNKNOWN, Reader, ReplayGap, visible
from streaming.core.ids import Key, format_id, parse_id
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter, is_internal
from streaming.scaleout.redis_client import FOLLOW_SECONDS, Client, Durable, connect, follow_master
from streaming.scaleout.redis_entries import entry_event, entry_fields, pairs
from streaming.scaleout.redis_keys import STREAM_KEY as STREAM_KEY  # the stream, as tests and tools name it
from streaming.scaleout.redis_keys import rename_legacy_keys

log = logging.getLogger("jobstream.redis")

# XREAD BLOCK must return well inside the socket timeout (redis_client), and bounds how long
# ``stop`` waits for the reader.
BLOCK_MS = 500
READ_BATCH = 500
# publish waits at most this long for the readers to deliver the entry it
# added (back-pressure; see RedisBroker.publish).
DELIVERY_WAIT_SECONDS = 1.0
# How often a publish looks at the other workers' cursors while it waits.
PEER_POLL_SECONDS = 0.001
# Other workers may trail by this many of this worker's publishes: enough to
# keep publishes pipelined, far below a client buffer (STREAM_CLIENT_BUFFER).
PEER_SLACK = 8
BACKOFF_MIN_SECONDS = 0.05
BACKOFF_MAX_SECONDS = 1.0
# A reader that lags (a burst, a short outage) must find its entries still
# there, even with STREAM_HISTORY_SIZE=0.
MIN_RETAINED = 100
CANARY_RETAINED = 100  # canaries kept: each worker reads its own back at once


class Peers(Protocol):
    """The other workers of this host (``streaming.scaleout.instance.DeliveryCursors``)."""

    def report(self, ms: int, seq: int) -> None: ...
    def clear(self) -> None: ...
    def all_past(self, ms: int, seq: int) -> bool: ...


class RedisPublisher:
    """``XADD`` only: for a process that publishes but serves no streams
    (``python -m jobs.worker`` with ``REDIS_URL``)."""

    def __init__(self, target: RedisTarget | str, history_size: int, key: str = STREAM_KEY) -> None:
        self.target = as_target(target)
        self.history_size = history_size
        self.key = key
        self.maxlen = max(history_size, MIN_RETAINED)
        self.canary_key = f"{key}:canary"
        self._client: Client | None = None
        self._durable: Durable | None = None
        self._client_lock = threading.Lock()

    @property
    def redis(self) -> Client:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = connect(self.target)
                    self._durable = Durable(self._client, self.target, self.key)
        return self._client

    @property
    def durable(self) -> Durable:
        self.redis  # noqa: B018 - makes the client and its Durable
        assert self._durable is not None
        return self._durable

    def publish(self, topic: str, event: str, data: str, delivery: Delivery = PUBLIC) -> Event:
        fields = entry_fields(topic, event, data, delivery)
        try:
            if is_internal(topic):
                # No WAIT: a canary measures the flow, it is not acknowledged to anyone.
                entry_id = self.redis.xadd(self.canary_key, fields, maxlen=CANARY_RETAINED, approximate=True)  # type: ignore[arg-type]
            else:
                entry_id = self.durable.write(
                    lambda c: c.xadd(self.key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
                )
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        return Event.create(str(entry_id), topic, event, data, delivery)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._durable = None


class RedisBroker(RedisPublisher):
    def __init__(
        self,
        registry: Registry,
        target: RedisTarget | str,
        history_size: int,
        key: str = STREAM_KEY,
        fanout_run: int = 25,
    ) -> None:
        super().__init__(target, history_size, key)
        self.registry = registry
        # Events fanned out between two yields to the streams: under half a
        # client buffer, so a stream that writes at every yield never
        # overflows, while each write still carries many events.
        self.fanout_run = fanout_run
        self._up = True
        self._cursor: str | None = None  # the reader's last delivered entry id
        self._canary_cursor = "0-0"  # the reader's last canary entry id
        self._last: Key | None = None
        self._reader = Background("jobstream-redis", self._read)
        self._delivered = threading.Condition()
        # The host's other workers (``attach_peers``), when there are several.
        self.peers: Peers | None = None
        self._published: collections.deque[Key] = collections.deque(maxlen=PEER_SLACK)

    def attach_peers(self, peers: Peers) -> None:
        """Wait for the host's other workers too (back-pressure across workers)."""
        self.peers = peers

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._reader.running:
            return
        # Fix the reader's starting point now, so an event published right
        # after start (by anyone) is delivered. Redis down: start from this
        # moment on the local clock and let the reader retry.
        try:
            if self.key == STREAM_KEY and not isinstance(self.redis, redis.RedisCluster):
                # Before the newest id is read: another worker's rename is atomic, so
                # this one starts past the renamed stream's entries, not before them.
                rename_legacy_keys(self.redis)
            self._cursor = self._newest_id()
            newest: Any = self.redis.xrevrange(self.canary_key, count=1)
            self._canary_cursor = str(newest[0][0]) if newest else "0-0"
        except redis.RedisError as exc:
            self._cursor = self._canary_cursor = f"{time.time_ns() // 1_000_000}-0"
            self._up = False
            log.error("redis unavailable at start", extra={"event": "broker_down", "error": str(exc)})
        self._reader.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._reader.stop(timeout)
        if self.peers is not None:
            self.peers.clear()  # nobody should wait for a reader that stopped
        self.close()

    @property
    def running(self) -> bool:
        return self._reader.running

    # -- Broker -----------------------------------------------------------------

    def publish(self, topic: str, event: str, data: str, delivery: Delivery = PUBLIC) -> Event:
        """Add the event, then wait until the readers delivered it.

        The wait is the back-pressure of the embedded mode's synchronous
        fan-out: without it publishers outrun the readers, the clients'
        buffers overflow and, past the stream's MAXLEN, events are lost. First
        this worker's reader, then (``peers``) every worker of the host: a
        publisher served by a fast worker must not leave a busier one seconds
        behind. The whole wait is bounded, and skipped while the reader is
        not running.
        """
        if not self._up:
            raise BrokerUnavailable("redis unreachable")
        if is_internal(topic):
            return super().publish(topic, event, data, delivery)  # nobody to wait for
        published = super().publish(topic, event, data, delivery)
        if self._reader.running:
            deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
            with self._delivered:
                self._delivered.wait_for(self._past(published.key), timeout=DELIVERY_WAIT_SECONDS)
            if self.peers is not None:
                self._wait_for_peers(self.peers, published.key, deadline)
        return published

    def _wait_for_peers(self, peers: Peers, key: Key, deadline: float) -> None:
        # Wait for the publish PEER_SLACK before this one, not this one.
        older = self._published[0] if len(self._published) == PEER_SLACK else None
        self._published.append(key)
        if older is None:
            return
        ms, seq = older
        while not peers.all_past(ms, seq) and self._up and time.monotonic() < deadline:
            time.sleep(PEER_POLL_SECONDS)

    def _past(self, key: Key) -> Any:
        return lambda: not self._up or (self._last is not None and self._last >= key)

    def replay(self, after: Key, topics: TopicFilter, may_read: Reader | None = None) -> list[Event]:
        if not self._up:
            raise BrokerUnavailable("redis unreachable")
        try:
            info, entries = self._window(format_id(after))
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        last = parse_id(info.get("last-generated-id")) or (0, 0)
        if self.history_size <= 0:
            # Replay is off (as in History(0)): only the newest id resumes.
            if after != last:
                raise ReplayGap(EXPIRED if after < last else UNKNOWN)
            return []
        found = bool(entries) and entries[0][0] == format_id(after)
        if not found:
            trimmed = info.get("entries-added", 0) > info.get("length", 0)
            first_entry = info.get("first-entry")
            first = parse_id(first_entry[0]) if first_entry else None
            if trimmed and (first is None or after < first):
                raise ReplayGap(EXPIRED)
            if trimmed or after != (0, 0):
                raise ReplayGap(UNKNOWN)
        # Resumability was decided on ids above; only now is anything filtered.
        events = [entry_event(entry_id, fields) for entry_id, fields in entries[1 if found else 0 :]]
        return visible((e for e in events if e is not None), topics, may_read)

    def _window(self, start: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, str]]]]:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xinfo_stream(self.key)
        pipe.xrange(self.key, min=start, max="+")
        info, entries = pipe.execute(raise_on_error=False)
        if isinstance(info, redis.ResponseError):
            return {}, []  # no such key: nothing was ever published (or it was deleted)
        if isinstance(info, Exception):
            raise info
        if isinstance(entries, Exception):
            raise entries
        # A Cluster transaction leaves XRANGE's reply unparsed: fields as a flat list.
        return info, [(entry_id, pairs(fields)) for entry_id, fields in entries or ()]

    @property
    def last_key(self) -> Key | None:
        return self._last

    @property
    def healthy(self) -> bool:
        return self._up

    # -- the reader -------------------------------------------------------------

    def _read(self, stop: threading.Event) -> None:
        backoff = BACKOFF_MIN_SECONDS
        followed = time.monotonic()
        while not stop.is_set():
            try:
                if time.monotonic() - followed >= FOLLOW_SECONDS:
                    followed = time.monotonic()
                    follow_master(self.redis)
                if self._cursor is None:
                    self._cursor = self._newest_id()
                elif not self._up:
                    self._check_trimmed()
                streams: dict[Any, Any] = {self.key: self._cursor, self.canary_key: self._canary_cursor}
                reply: Any = self.redis.xread(streams, count=READ_BATCH, block=BLOCK_MS)
            except redis.RedisError as exc:
                if self._up:
                    log.error("redis unavailable; reconnecting", extra={"event": "broker_down", "error": str(exc)})
                self._up = False
                self._notify_delivered()  # publishers waiting on delivery give up
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                continue
            if not self._up:
                log.warning("redis available again", extra={"event": "broker_up", "resume_after": self._cursor})
                self._up = True
            backoff = BACKOFF_MIN_SECONDS
            run = 0
            for key, entries in reply or ():
                if key == self.canary_key:
                    self._deliver_internal(entries)
                    continue
                for entry_id, fields in entries:
                    self._cursor = entry_id
                    event = entry_event(entry_id, fields)
                    if event is None:
                        continue
                    self._last = event.key
                    try:
                        self.registry.fanout(event)
                    except Exception:
                        log.exception("fan-out failed", extra={"event": "fanout_failed", "id": entry_id})
                    run += 1
                    if run >= self.fanout_run:
                        # Let the streams write before more is queued: the
                        # 500 entries of one read fanned out at once would
                        # overflow every client buffer (STREAM_CLIENT_BUFFER).
                        run = 0
                        self._notify_delivered()
                        time.sleep(0)
                self._notify_delivered()

    def _deliver_internal(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        # Neither ``_cursor`` nor ``_last``: publishes and peers wait on those.
        for entry_id, fields in entries:
            self._canary_cursor = entry_id
            event = entry_event(entry_id, fields)
            if event is not None and is_internal(event.topic):
                self.registry.fanout(event)  # only internal listeners, which do not raise

    def _notify_delivered(self) -> None:
        if self.peers is not None and self._last is not None:
            self.peers.report(*self._last)
        with self._delivered:
            self._delivered.notify_all()

    def _newest_id(self) -> str:
        newest: Any = self.redis.xrevrange(self.key, count=1)
        if not newest:
            return "0-0"
        entry_id = str(newest[0][0])
        self._last = parse_id(entry_id)
        return entry_id

    def _check_trimmed(self) -> None:
        """After an outage: if entries past our cursor were trimmed, the live
        path lost them; flag every client so it heals (or resets) from replay."""
        assert self._cursor is not None
        try:
            info = self.redis.xinfo_stream(self.key)
        except redis.ResponseError:
            return  # no stream (yet): nothing was trimmed
        first_entry = info.get("first-entry")
        first = parse_id(first_entry[0]) if first_entry else None
        cursor = parse_id(self._cursor) or (0, 0)
        if info.get("entries-added", 0) > info.get("length", 0) and first is not None and first > cursor:
            log.warning("reader fell behind the stream's trim", extra={"event": "reader_gap", "cursor": self._cursor})
            for client in self.registry.clients():
                client.writer.mark_gap()
