"""One ``/ws`` socket's conversation: what the client's messages do and what the server sends.

A WebSocket client is a ``Client`` like any other (``transport="ws"``): the
same registry, limits, buffer, eviction, tokens, private and owned events,
priorities and background spacing. This class holds everything about a
socket that does not depend on how its bytes move; two subclasses move them
(docs/websocket.md):

* ``streaming.transport.ws_fastpath.DirectWebSocket``: under gunicorn's
  gevent worker, the request's own greenlet and nothing else (the default);
* ``streaming.transport.websocket.ThreadedWebSocket``: flask-sock on
  simple-websocket, for ``permessage-deflate`` and outside gevent.

A subclass supplies ``_send_frames`` (frames, in order, after the rest of a
partial direct write), ``_close`` (a close frame, once) and, when an
extension rewrites frames, ``_text_frame``. Every write happens under
``_sending``, a lock where a subscribe's replay and a sender run at once.

Order: a replay (a ``subscribe`` with ``last_event_id``) and the queued
events share ``last_key``; ``_frame_of`` skips ids at or below it, so every
event reaches the socket once, in order, whichever path wrote it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import time
from typing import Any

from server.readers import ReadDenied
from server.tokens import Grant
from streaming.core.client import Client
from streaming.core.events import Event
from streaming.core.history import ReplayGap
from streaming.core.ids import format_id, parse_id
from streaming.core.reasons import CloseReason
from streaming.core.topics import TopicFilter
from streaming.ops.service import StreamingService
from streaming.transport import ws_messages
from streaming.transport.connect import readable

log = logging.getLogger("jobstream.streaming")

PATH = "/ws"
MAX_BAD_MESSAGES = 10
MAX_BATCH = 64  # frames joined into one write
# How long an evicted socket whose buffers stay full may hold its greenlet and pool slot.
EVICT_GRACE_SECONDS = 2.0
# No lock where one greenlet does every write (a nullcontext can be re-entered).
NO_LOCK: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()


class WebSocketSession:
    """One socket's client, its subscriptions and what goes out, in order."""

    __slots__ = ("_bad", "_plain_frames", "_sending", "client", "grant", "svc")

    def __init__(
        self,
        svc: StreamingService,
        client: Client,
        grant: Grant | None,
        plain_frames: bool,
        sending: contextlib.AbstractContextManager[Any] = NO_LOCK,
    ) -> None:
        self.svc = svc
        self.client = client
        self.grant = grant
        client.transport = "ws"
        # Frames built once per event for every socket, unless an extension
        # was negotiated: permessage-deflate frames differ per socket.
        self._plain_frames = plain_frames
        self._sending = sending
        self._bad = 0

    # -- what the wire does (subclasses) ---------------------------------------

    def _send_frames(self, frames: list[bytes]) -> None:
        raise NotImplementedError

    def _close(self, code: int, reason: Any) -> None:
        raise NotImplementedError

    def _text_frame(self, text: str) -> bytes:
        return ws_messages.text_frame(text)

    # -- what the client says ---------------------------------------------------

    def handle(self, text: str | bytes) -> None:
        """One complete message from the client."""
        try:
            command = ws_messages.parse(text)
            self._bad = 0
            if command.kind == "subscribe":
                self._subscribe(command.topics, command.last_event_id)
            elif command.kind == "unsubscribe":
                self._unsubscribe(command.topics)
            elif command.kind == "visibility":
                interval = self.svc.settings.background_interval_seconds
                self.client.writer.space_out(interval if command.hidden else None)
            else:
                self._send(ws_messages.control("pong"))
        except (ValueError, ReadDenied) as exc:
            self._bad += 1
            if self._bad >= MAX_BAD_MESSAGES:
                self._close(ws_messages.POLICY_VIOLATION, {"error": f"{MAX_BAD_MESSAGES} unusable messages in a row"})
                self.client.close(CloseReason.CLIENT)
                return
            self._send(ws_messages.error(exc.message if isinstance(exc, ReadDenied) else str(exc)))

    def _subscribe(self, patterns: tuple[str, ...], last_event_id: str | None) -> None:
        topics = readable(self.grant, TopicFilter(patterns))
        with self._sending:
            # From here the fan-out queues: an event written directly while
            # the replay waits for history would overtake it.
            self.client.writer.parked = False
            self.client.topics = topics
            if last_event_id is not None:
                self._replay(last_event_id)
            elif topics.could_match_prefix("jobs/"):
                self._snapshot()

    def _unsubscribe(self, patterns: tuple[str, ...]) -> None:
        TopicFilter(patterns)  # the same checks as a subscribe
        left = [p for p in self.client.topics.patterns if p not in patterns]
        self.client.topics = TopicFilter(left) if left else TopicFilter.nothing()

    def _replay(self, last_event_id: str) -> None:
        """Under ``_sending``: what came after ``last_event_id``, or a reset and a snapshot."""
        svc, client = self.svc, self.client
        key = parse_id(last_event_id)
        try:
            if key is None:
                raise ReplayGap("malformed")
            events = svc.broker.replay(key, client.topics, client.may_read)
        except ReplayGap as gap:
            svc.reset(gap.reason)
            self._raw_send(ws_messages.control("reset", {"reason": gap.reason, "last_event_id": last_event_id}))
            self._snapshot()
            return
        svc.replayed("reconnect")
        client.writer.last_key = key  # asked for: even events this socket already got
        for event in events:
            self._deliver(event)

    def _snapshot(self) -> None:
        jobs = self.svc.jobs
        body = jobs.snapshot(self.client.topics, self.client.grant) if jobs is not None else {"jobs": []}
        last = self.svc.broker.last_key
        self._raw_send(ws_messages.control("snapshot", body, format_id(last) if last else None))
        if last is not None:
            writer = self.client.writer
            writer.last_key = max(writer.last_key or last, last)

    # -- what the server sends ----------------------------------------------------

    def _deliver_batch(self, item: Any) -> None:
        """``item`` and whatever else is queued, ``MAX_BATCH`` frames a write:
        a sender that wakes late catches up in a few writes, not one per
        event, as the SSE generator does. Under ``_sending``."""
        writer = self.client.writer
        frames: list[bytes] = []
        while True:
            if writer.gap:  # dropped while we wrote: history first, in order
                self._send_frames(frames)
                frames = []
                self._heal()
            if isinstance(item, Event):  # not a marker (WAKE, KEEPALIVE, ...)
                frame = self._frame_of(item)
                if frame is not None:
                    frames.append(frame)
                    if len(frames) >= MAX_BATCH:
                        self._send_frames(frames)
                        frames = []
            try:
                item = writer.queue.get_nowait()
            except queue.Empty:
                break
        self._send_frames(frames)

    def _deliver(self, event: Event) -> None:
        frame = self._frame_of(event)
        if frame is not None:
            self._send_frames([frame])

    def _frame_of(self, event: Event) -> bytes | None:
        """The frame for ``event``, or ``None`` if this socket already got it;
        counts it as sent (the caller sends it before anything else)."""
        writer = self.client.writer
        if writer.last_key is not None and event.key <= writer.last_key:
            return None  # already sent (a replay ran ahead of the queue)
        writer.last_key = event.key
        writer.events_sent += 1
        writer.last_write = time.monotonic()
        if self._plain_frames:
            return ws_messages.event_frame(event)
        return self._text_frame(ws_messages.event(event))

    def _heal(self) -> None:
        """A full buffer dropped events: send them from history, in order."""
        client, writer = self.client, self.client.writer
        writer.gap = False
        self.svc.replayed("overflow")
        try:
            events = self.svc.broker.replay(writer.last_key or (0, 0), client.topics, client.may_read)
        except ReplayGap:
            self.svc.reset("overflow")
            self._raw_send(ws_messages.control("reset", {"reason": "overflow", "last_event_id": None}))
            self._snapshot()
            return
        for event in events:
            self._deliver(event)

    def _farewell(self) -> None:
        """The close frame the end's reason calls for (the registry logs the end)."""
        reason, client = self.client.closing, self.client
        if reason is CloseReason.SHUTDOWN:
            self._close(ws_messages.SERVICE_RESTART, {"error": "server restarting", "retry_ms": client.close_retry_ms})
        elif reason is CloseReason.EVICTED:
            self._close(ws_messages.SLOW_CONSUMER, "slow consumer")
        elif reason is CloseReason.TOKEN_EXPIRED:
            self._raw_send(ws_messages.control("token-expired", {"sub": client.grant.sub if client.grant else None}))
            self._close(ws_messages.TOKEN_EXPIRED, "token expired")
        elif reason is not None and reason is not CloseReason.CLIENT:
            self._close(1000, str(reason))

    def _log_opened(self) -> None:
        client = self.client
        sub = (client.grant.sub or None) if client.grant is not None else None
        fields = {"event": "stream_opened", "client_id": client.id, "transport": "ws", "ip": client.remote_addr}
        log.info("stream opened", extra={**fields, "sub": sub, "user_agent": client.user_agent})

    def _outgoing(self, frames: list[bytes]) -> bytes:
        """What a write of ``frames`` sends: a direct write's unsent tail first,
        then the frames; from here no direct write until the loop parks again."""
        writer = self.client.writer
        writer.parked = False  # no direct write while this one may wait
        rest, writer.pending = writer.pending, None
        if rest is not None:
            frames = [rest, *frames]
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _send(self, text: str) -> None:
        with self._sending:
            self._raw_send(text)

    def _raw_send(self, text: str) -> None:
        self._send_frames([self._text_frame(text)])


def close_reason(reason: Any) -> str:
    """A close frame's reason: text, or JSON; at most 123 bytes (RFC 6455 section 5.5.1)."""
    message = reason if isinstance(reason, str) else json.dumps(reason, separators=(",", ":"))
    return message.encode("utf-8")[:123].decode("utf-8", "ignore")


def origin_allowed(origin: str | None, host_url: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser page at ``origin`` may open a socket on ``host_url``.

    Browsers send cookies with a WebSocket from any page and no CORS applies:
    without this check another site could read a signed-in visitor's stream
    (cross-site WebSocket hijacking).
    """
    if origin is None:
        return True  # not a browser page (a script, a server)
    return origin == host_url or "*" in allowed or origin in allowed
