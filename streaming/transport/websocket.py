"""``GET /ws``: the route, the refusals before the upgrade, and the flask-sock fallback.

A socket is served one of two ways, with the same conversation
(``streaming.transport.ws_session``):

* ``streaming.transport.ws_fastpath``: under gunicorn's gevent worker, for
  a socket without extensions, in front of Flask, by the request's greenlet
  alone (the default: the leanest, docs/websocket.md).
* Here, ``ThreadedWebSocket`` on flask-sock and simple-websocket: when the
  client negotiates ``permessage-deflate`` (``STREAM_WS_COMPRESSION=1``),
  outside gevent (``flask run``, threads), and for a request the fast path
  leaves alone. It needs real threads' shape: simple-websocket's reader
  (which also pings every keep-alive interval and closes a peer that misses
  a pong), ``_send_loop``, which drains the client's queue, and the view's
  own, which handles what the client sends.

The upgrade is refused with the same JSON ``401`` as ``/stream`` for a bad
or missing token, before any socket is switched (a ``before_request``
hook), ``403`` for a foreign ``Origin``, ``426`` without ``Upgrade``;
everything after the upgrade is said with close codes (``ws_messages``).
A stream evicted while its socket is full cannot be sent a close frame;
the view's loop shuts the socket down ``EVICT_GRACE_SECONDS`` later if the
sender is still stuck, so the greenlet and the pool slot are freed.
"""

from __future__ import annotations

import _socket
import contextlib
import socket
import ssl
import threading
import time
from typing import Any

from flask import Flask, g, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server
from wsproto.events import TextMessage

from server.errors import error_response
from server.readers import ReadDenied
from server.sockets import send_now
from server.tokens import Grant
from streaming.core.reasons import CloseReason
from streaming.core.topics import TopicFilter
from streaming.core.writer import WAKE
from streaming.ops.service import StreamingService
from streaming.transport import ws_messages
from streaming.transport.connect import new_client, stream_grant
from streaming.transport.connect import tune_stream_socket as tune_socket  # NODELAY and the TCP timeout, as SSE
from streaming.transport.ws_fastpath import WebSocketFastPath
from streaming.transport.ws_session import (
    EVICT_GRACE_SECONDS,
    PATH,
    WebSocketSession,
    close_reason,
    origin_allowed,
)

# The view polls for an eviction whose sender is stuck in a full socket
# (nothing else can wake it then); every other end wakes it at once.
_RECEIVE_POLL_SECONDS = 2.0
_GRANT_KEY = "jobstream_ws_grant"


def init_app(app: Flask, svc: StreamingService) -> None:
    app.wsgi_app = WebSocketFastPath(app.wsgi_app, svc)  # type: ignore[method-assign]
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
        host_url = request.host_url.rstrip("/")
        if not origin_allowed(request.headers.get("Origin"), host_url, svc.settings.allowed_origins):
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
        ThreadedWebSocket(svc, ws, request.environ, g.get(_GRANT_KEY)).run()


class ThreadedWebSocket(WebSocketSession):
    """One flask-sock ``/ws`` connection from admission to close."""

    __slots__ = ("_os_socket", "raw_socket", "ws")

    def __init__(self, svc: StreamingService, ws: Server, environ: dict[str, Any], grant: Grant | None) -> None:
        environ = {**environ, "gunicorn.socket": None}  # no direct writes, no SSE socket handling
        client = new_client(svc, environ, TopicFilter.nothing(), grant)
        super().__init__(svc, client, grant, not ws_messages.extensions_of(ws), threading.Lock())
        self.ws = ws
        self.raw_socket = getattr(ws, "sock", None)
        tune_socket(self.raw_socket, svc.registry.stale_after)
        os_socket = getattr(self.raw_socket, "_sock", self.raw_socket)
        # Under TLS the OS socket carries the TLS records: a frame written
        # there, past the TLS layer, would end the client's session. (Under
        # gevent, ssl.SSLSocket is gevent's class, which gunicorn's TLS uses.)
        tls = isinstance(self.raw_socket, ssl.SSLSocket)
        self._os_socket = os_socket if isinstance(os_socket, _socket.socket) and not tls else None
        if self._plain_frames and self._os_socket is not None:
            self.client.writer.enable_direct_frames(self._os_socket, ws_messages.event_frame)

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
        self._log_opened()
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
                self.handle(text)
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
                    self._deliver_batch(item)  # a gap is healed first
            self._farewell()
        except (ConnectionClosed, OSError):
            client.close(CloseReason.CLIENT)
        finally:
            self.ws.event.set()  # the view's loop sees the end without waiting out its poll

    # -- the wire --------------------------------------------------------------

    def _text_frame(self, text: str) -> bytes:
        if self._plain_frames:
            return ws_messages.text_frame(text)
        frame: bytes = self.ws.ws.send(TextMessage(data=text))  # compressed by wsproto
        return frame

    def _send_frames(self, frames: list[bytes]) -> None:
        # Not ws.send: it calls socket.send once, which may send only part of
        # a big frame; sendall finishes it (or fails).
        data = self._outgoing(frames)
        if not data:
            return
        if not self.ws.connected:
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
        raw = self._os_socket
        if raw is not None:
            sent = send_now(raw, data)  # once without waiting (server.sockets)
            if sent == len(data):
                return
            data = data[sent:]
        self.ws.sock.sendall(data)

    def _close(self, code: int, reason: Any) -> None:
        try:
            self.ws.close(code, close_reason(reason))
        except (ConnectionClosed, OSError):
            pass

    def _shut_down(self) -> None:
        # The OS socket even under TLS: a TCP shutdown writes no bytes, and
        # fails the stuck sender's write at once.
        target = getattr(self.raw_socket, "_sock", self.raw_socket)
        if isinstance(target, _socket.socket):
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_RDWR)
