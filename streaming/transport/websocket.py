"""``GET /ws``: the same streams over a WebSocket (flask-sock on simple-websocket).

A WebSocket client is a ``Client`` like any other (``transport="ws"``): the
same registry, limits, buffer, eviction, tokens, private and owned events,
priorities and background spacing. What differs is the wire and who writes:

* The upgrade is refused with the same JSON ``401`` as ``/stream`` for a bad
  or missing token, before any socket is switched (a ``before_request`` hook);
  everything after the upgrade is said with close codes: ``1013`` at capacity
  or past the per-IP limit (the reason is JSON with ``retry_ms``), ``4008``
  ``slow consumer`` on eviction, ``1012`` at shutdown (``retry_ms``, the same
  jittered hint as the SSE farewell), ``4001`` after ``token-expired``,
  ``1008`` after ``MAX_BAD_MESSAGES`` unusable messages in a row.
* Two greenlets per socket: simple-websocket's reader (which also pings every
  keep-alive interval and closes a peer that misses a pong: the dead-peer
  detector), and ``_send_loop``, which drains the client's queue; the view's
  own greenlet handles what the client sends. A replay (a ``subscribe`` with
  ``last_event_id``) and the sender share ``_sending``, and the sender skips
  ids at or below ``last_key``, so events reach the client once, in order.
* Direct writes as for SSE (``streaming/core/writer.py``): while the sender
  waits on an empty queue, the fan-out sends the event's frame itself (not
  with ``permessage-deflate``). Every other write un-parks first, so a replay
  is never overtaken, and sends a partial direct write's rest first.
* A stream evicted while its socket is full cannot be sent a close frame;
  the view's loop shuts the socket down ``EVICT_GRACE_SECONDS`` later if the
  sender is still stuck, so the greenlet and the pool slot are freed.
"""

from __future__ import annotations

import _socket
import contextlib
import json
import logging
import queue
import socket
import threading
import time
from typing import Any

from flask import Flask, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server
from wsproto.events import TextMessage

from server.errors import error_response
from server.readers import ReadDenied
from server.tokens import Grant
from streaming.core.client import Client
from streaming.core.events import Event
from streaming.core.history import ReplayGap
from streaming.core.ids import format_id, parse_id
from streaming.core.reasons import CloseReason
from streaming.core.topics import TopicFilter
from streaming.core.writer import KEEPALIVE, WAKE
from streaming.ops.service import StreamingService
from streaming.transport import ws_messages
from streaming.transport.connect import new_client, readable, stream_grant
from streaming.transport.connect import tune_stream_socket as tune_socket  # NODELAY and the TCP timeout, as SSE

log = logging.getLogger("jobstream.streaming")

PATH = "/ws"
MAX_BAD_MESSAGES = 10
EVICT_GRACE_SECONDS = 2.0
# The view polls for an eviction whose sender is stuck in a full socket
# (nothing else can wake it then); every other end wakes it at once.
_RECEIVE_POLL_SECONDS = 2.0
MAX_BATCH = 64  # frames joined into one sendall
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_GRANT_KEY = "jobstream_ws_grant"


def init_app(app: Flask, svc: StreamingService) -> None:
    sock = Sock(app)
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {"ping_interval": svc.settings.keepalive_seconds, "max_message_size": ws_messages.MAX_MESSAGE_BYTES},
    )

    @app.before_request
    def _refuse_before_the_upgrade() -> Any:
        if request.path != PATH:
            return None
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return error_response(
                426, "upgrade required: /ws speaks WebSocket only; use /stream for SSE", {"Upgrade": "websocket"}
            )
        if not _same_origin_or_allowed(svc):
            # Browsers send cookies with a WebSocket from any page and no CORS
            # applies: without this check another site could read a signed-in
            # visitor's stream (cross-site WebSocket hijacking).
            return error_response(403, "origin not allowed: add it to STREAM_ALLOWED_ORIGINS")
        try:
            g.setdefault(_GRANT_KEY, stream_grant(svc, request.environ))
        except ReadDenied as denied:
            return error_response(denied.status, denied.message, {"WWW-Authenticate": denied.challenge})
        if not svc.settings.ws_compression:
            # simple-websocket accepts whatever is offered, read from the environ.
            request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return None

    @sock.route(PATH)  # type: ignore[untyped-decorator]
    def ws_stream(ws: Server) -> None:
        WebSocketStream(svc, ws, request.environ, g.get(_GRANT_KEY)).run()


class WebSocketStream:
    """One ``/ws`` connection from admission to close."""

    def __init__(self, svc: StreamingService, ws: Server, environ: dict[str, Any], grant: Grant | None) -> None:
        self.svc = svc
        self.ws = ws
        self.grant = grant
        environ = {**environ, "gunicorn.socket": None}  # no direct writes, no SSE socket handling
        self.client = new_client(svc, environ, TopicFilter.nothing(), grant)
        self.client.transport = "ws"
        self.raw_socket = getattr(ws, "sock", None)
        # Frames built here (once per event for every socket) unless an
        # extension was negotiated: permessage-deflate frames differ per socket.
        self._plain_frames = not ws_messages.extensions_of(ws)
        tune_socket(self.raw_socket, svc.registry.stale_after)
        os_socket = getattr(self.raw_socket, "_sock", self.raw_socket)
        self._os_socket = os_socket if isinstance(os_socket, _socket.socket) else None
        if self._plain_frames and self._os_socket is not None:
            self.client.writer.enable_direct_frames(self._os_socket, ws_messages.event_frame)
        self._sending = threading.Lock()
        self._bad = 0

    # -- the view's greenlet ---------------------------------------------------

    def run(self) -> None:
        svc, client = self.svc, self.client
        refused = svc.registry.admit(client)
        if refused is not None:
            retry = svc.reconnect_delay_ms()
            self._close(ws_messages.TRY_AGAIN_LATER, {"error": str(refused), "retry_ms": retry})
            return
        if not svc.started:
            svc.start()
        log.info("stream opened", extra=_log_fields(client, "stream_opened"))
        sender = threading.Thread(target=self._send_loop, name="jobstream-ws-send", daemon=True)
        sender.start()
        try:
            self._receive_loop()
        finally:
            svc.registry.remove(client, client.closing or CloseReason.CLIENT)
            client.writer.nudge(WAKE)
            sender.join(EVICT_GRACE_SECONDS)

    def _receive_loop(self) -> None:
        client, ws = self.client, self.ws
        evicted_at: float | None = None
        while ws.connected and client.closing is None:
            text = self._receive()
            if text is not None:
                self._handle(text)
        while client.closing is not None and ws.connected:
            # Waiting for the sender to say goodbye; a stuck one is cut off.
            evicted_at = evicted_at or time.monotonic()
            if time.monotonic() - evicted_at > EVICT_GRACE_SECONDS:
                self._shut_down()
                break
            time.sleep(0.05)

    def _receive(self) -> str | bytes | None:
        """The next client message, or ``None`` after a poll or a wake-up.

        ``ws.receive`` would wait again after a wake-up with no message; this
        returns, so the sender's ``ws.event.set()`` at its end is seen at once.
        """
        ws = self.ws
        if not ws.input_buffer:
            ws.event.wait(timeout=_RECEIVE_POLL_SECONDS)
            ws.event.clear()
        if ws.input_buffer:
            message: str | bytes = ws.input_buffer.pop(0)
            return message
        return None

    def _handle(self, text: str | bytes) -> None:
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

    # -- the sender's greenlet -------------------------------------------------

    def _send_loop(self) -> None:
        client, writer = self.client, self.client.writer
        try:
            while client.closing is None and self.ws.connected:
                # No timeout (a timer per wake-up): every end puts WAKE
                # (``Client.close``, the view's ``finally``). Parked until
                # something is queued: the fan-out writes for us meanwhile.
                writer.park()
                item = writer.queue.get()
                writer.parked = False
                with self._sending:
                    if writer.gap:
                        self._heal()
                    self._deliver_batch(item)
            self._farewell()
        except (ConnectionClosed, OSError):
            client.close(CloseReason.CLIENT)
        finally:
            self.ws.event.set()  # the view's loop sees the end without waiting out its poll

    def _deliver_batch(self, item: Any) -> None:
        """``item`` and whatever else is queued, ``MAX_BATCH`` frames a
        ``sendall``: a sender that wakes late catches up in a few writes, not
        one per event, as the SSE generator does. Under ``_sending``."""
        writer = self.client.writer
        frames: list[bytes] = []
        while True:
            if writer.gap:  # dropped while we wrote: history first, in order
                self._send_frames(frames)
                frames = []
                self._heal()
            if item is not WAKE and item is not KEEPALIVE:
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
        return self._wsproto_frame(ws_messages.event(event))

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
        log.info("stream closed", extra={**_log_fields(client, "stream_closed"), "reason": reason})

    # -- the wire --------------------------------------------------------------

    def _send(self, text: str) -> None:
        with self._sending:
            self._raw_send(text)

    def _raw_send(self, text: str) -> None:
        self._send_frames([ws_messages.text_frame(text) if self._plain_frames else self._wsproto_frame(text)])

    def _wsproto_frame(self, text: str) -> bytes:
        frame: bytes = self.ws.ws.send(TextMessage(data=text))
        return frame

    def _send_frames(self, frames: list[bytes]) -> None:
        # Not ws.send: it calls socket.send once, which may send only part of
        # a big frame; sendall finishes it (or fails).
        writer = self.client.writer
        writer.parked = False  # no direct write while this one may wait
        rest, writer.pending = writer.pending, None  # a direct write's unsent tail goes first
        if rest is not None:
            frames = [rest, *frames]
        if not frames:
            return
        if not self.ws.connected:
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        raw = self._os_socket
        if raw is not None:
            # One non-blocking send first, as the SSE direct writes do: gevent's
            # sendall costs more than the send itself for a small frame.
            try:
                sent = raw.send(data, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.ws.sock.sendall(data)

    def _close(self, code: int, reason: Any) -> None:
        message = reason if isinstance(reason, str) else json.dumps(reason, separators=(",", ":"))
        try:
            self.ws.close(code, message[:123])  # a close reason is at most 123 bytes
        except (ConnectionClosed, OSError):
            pass

    def _shut_down(self) -> None:
        if self._os_socket is not None:
            with contextlib.suppress(OSError):
                self._os_socket.shutdown(socket.SHUT_RDWR)


def _same_origin_or_allowed(svc: StreamingService) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser page (a script, a server)
    allowed = svc.settings.allowed_origins
    return origin == request.host_url.rstrip("/") or "*" in allowed or origin in allowed


def _log_fields(client: Client, event: str) -> dict[str, Any]:
    sub = (client.grant.sub or None) if client.grant is not None else None
    return {"event": event, "client_id": client.id, "transport": "ws", "ip": client.remote_addr, "sub": sub}
