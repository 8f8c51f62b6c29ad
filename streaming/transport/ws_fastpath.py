"""``GET /ws`` in front of Flask, served by the request's greenlet alone.

Through flask-sock a socket held three greenlets (the request's, inside
Flask's request context, simple-websocket's reader, a sender) and 54 KB of
RSS against an SSE stream's 12.7 KB (docs/benchmarks.md). Here a socket is
shaped like an SSE stream: one greenlet that waits on the client's buffer,
one read watcher on the socket, direct writes by the fan-out while it waits.

* What it takes: a plain upgrade (``GET``, ``Upgrade: websocket``,
  version 13, a key, no body) on gunicorn's plain TCP socket under gevent,
  from gunicorn's HTTP/1 response or the worker's front door
  (``server.front``), with no extension to negotiate (``permessage-deflate``
  only with ``STREAM_WS_COMPRESSION=1``). Every other request, and every
  refusal before the upgrade (origin, token), goes on to Flask, which words
  it or serves the socket through flask-sock (``websocket.py``).
* The handshake is written here (RFC 6455 section 4.2.2); frames from the
  client are parsed by wsproto's ``Connection``; frames to it are built by
  ``ws_messages`` (events once per event, for every socket).
* One loop (``_serve``): park on the buffer; wake for an event, a marker,
  or ``READABLE`` from the read watcher (stopped while the loop runs, so a
  socket with unread bytes does not spin the hub); read what came, one
  ``recv`` per wake-up; deliver what is queued in batches.
* Keep-alive: the cleaner's tick queues ``KEEPALIVE`` in an idle socket's
  buffer and the loop sends a protocol ping; a socket that answered nothing
  since the previous ping is closed with ``1008`` ``Ping/Pong timeout``.
* A socket that is not reading: writes wait in ``_SEND_POLL_SECONDS``
  steps; once the stream is evicted, a write still stuck after
  ``EVICT_GRACE_SECONDS`` shuts the socket down (the client sees ``1006``),
  and one that resumes in time gets the rest and ``4008``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wsgi import get_host
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

from server import front
from server.readers import ReadDenied
from server.sockets import DONTWAIT, send_now
from server.tokens import Grant
from streaming.core.reasons import CloseReason
from streaming.core.topics import TopicFilter
from streaming.core.writer import KEEPALIVE, direct_socket
from streaming.ops.service import StreamingService
from streaming.transport import ws_messages
from streaming.transport.connect import new_client, stream_grant, tune_stream_socket
from streaming.transport.stream import shed_environ
from streaming.transport.ws_session import (
    EVICT_GRACE_SECONDS,
    PATH,
    WebSocketSession,
    close_reason,
    origin_allowed,
)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_SEND_POLL_SECONDS = 2.0
_LINGER_SECONDS = 1.0  # after our close frame: the peer's close, then EOF
READ_BYTES = 65536
_READ = 1  # libev EV_READ
# Put in a socket's buffer by its read watcher: the client sent something.
READABLE = object()


class WebSocketFastPath:
    """WSGI middleware: serves plain ``/ws`` upgrades, passes on everything else."""

    def __init__(self, app: WSGIApp, service: StreamingService) -> None:
        self.app = app
        self.service = service

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        server = _server_of(start_response)
        if server is None or not self._plain(environ):
            return self.app(environ, start_response)
        svc = self.service
        host_url = f"{environ.get('wsgi.url_scheme', 'http')}://{get_host(environ)}"
        if not origin_allowed(environ.get("HTTP_ORIGIN"), host_url, svc.settings.allowed_origins):
            return self.app(environ, start_response)  # the 403 is worded there
        try:
            grant = stream_grant(svc, environ)
        except ReadDenied:
            return self.app(environ, start_response)  # the 401 or 403
        sock = environ["gunicorn.socket"]
        accept = generate_accept_token(environ["HTTP_SEC_WEBSOCKET_KEY"].encode("ascii"))
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept
        )
        if not svc.started:
            svc.start()
        client = new_client(svc, _identity(environ), TopicFilter.nothing(), grant)
        shed_environ(environ)
        DirectWebSocket(svc, client, grant, sock).run()
        if server == "gunicorn":
            # gunicorn closes the connection quietly on StopIteration, and
            # would otherwise write a response head after the socket's end
            # (flask-sock does the same).
            raise StopIteration
        return []  # the front door writes nothing for a response never started

    def _plain(self, environ: dict[str, Any]) -> bool:
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
            return False
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket" or environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
            return False
        connection = {token.strip().lower() for token in environ.get("HTTP_CONNECTION", "").split(",")}
        if "upgrade" not in connection or len(environ.get("HTTP_SEC_WEBSOCKET_KEY", "")) != 24:
            return False
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
            return False
        if self.service.settings.ws_compression and "HTTP_SEC_WEBSOCKET_EXTENSIONS" in environ:
            return False  # flask-sock negotiates permessage-deflate
        # Plain TCP under gevent (not TLS, not HTTP/2): what the fan-out may write to directly.
        raw, _ = direct_socket(environ.get("gunicorn.socket"), environ)
        return raw is not None


def _server_of(start_response: Callable[..., Any]) -> str | None:
    """``gunicorn`` or ``front`` for the two responses whose socket may be taken over, else ``None``."""
    cls = type(getattr(start_response, "__self__", None))
    if cls is front.Response:
        return "front"
    if cls.__name__ == "Response" and cls.__module__ == "gunicorn.http.wsgi":
        return "gunicorn"
    return None


def _identity(environ: dict[str, Any]) -> dict[str, Any]:
    """What ``new_client`` reads, without the socket (the session writes it, not the SSE path)."""
    return {key: environ[key] for key in ("REMOTE_ADDR", "HTTP_USER_AGENT") if key in environ}


class DirectWebSocket(WebSocketSession):
    """One ``/ws`` socket served by its request's greenlet, from admission to close."""

    # One per open socket: slots.
    __slots__ = ("_parts", "conn", "open", "pinged", "raw", "readable", "sock", "watcher")

    def __init__(self, svc: StreamingService, client: Any, grant: Grant | None, sock: Any) -> None:
        super().__init__(svc, client, grant, plain_frames=True)
        self.sock = sock  # gevent's socket: the writes that must wait
        self.raw = sock._sock  # the OS socket: non-blocking reads and first sends
        self.conn = Connection(ConnectionType.SERVER)  # the client's frames
        self.watcher: Any = None
        self.readable = False
        self.open = True  # no close frame sent or received yet
        self.pinged = False  # a ping is out and nothing came back since
        self._parts: list[Any] | None = None  # a fragmented message so far

    def run(self) -> None:
        svc, client = self.svc, self.client
        self.sock.settimeout(_SEND_POLL_SECONDS)
        tune_stream_socket(self.sock, svc.registry.stale_after)
        refused = svc.registry.admit(client)
        if refused is not None:
            self._close(ws_messages.TRY_AGAIN_LATER, {"error": str(refused), "retry_ms": svc.reconnect_delay_ms()})
            self._linger()
            return
        self._log_opened()
        client.writer.enable_direct_frames(self.raw, ws_messages.event_frame)
        try:
            self._serve()
            self._farewell()
        except OSError:
            client.close(CloseReason.CLIENT)
        finally:
            self._unwatch()
            svc.registry.remove(client, client.closing or CloseReason.CLIENT)
        self._linger()  # no longer counted: its slot is free while the peer answers

    def _serve(self) -> None:
        client, writer = self.client, self.client.writer
        while client.closing is None and self.open:
            if self.readable:
                self._read()
                continue
            self._watch()
            writer.park()
            item = writer.queue.get()  # no timeout: every end queues WAKE (``Client.close``)
            writer.parked = False
            if item is KEEPALIVE:
                self._keepalive()
            self._deliver_batch(item)  # a gap is healed first

    # -- reading ---------------------------------------------------------------

    def _watch(self) -> None:
        watcher = self.watcher
        if watcher is None:
            from gevent import get_hub

            watcher = self.watcher = get_hub().loop.io(self.raw.fileno(), _READ)
        if not watcher.active:
            watcher.start(self._on_readable)

    def _on_readable(self) -> None:
        """In the hub: wake the loop (which reads), and stop watching until it waits again."""
        self.watcher.stop()
        self.readable = True
        self.client.writer.nudge(READABLE)  # a full buffer: the loop is awake anyway

    def _unwatch(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _read(self) -> None:
        self.readable = False
        try:
            data = self.raw.recv(READ_BYTES, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # reset by the peer
        self.pinged = False  # it is alive
        if not data:
            self.open = False  # gone without a close frame (1006 on its side, if anywhere)
            self.client.close(CloseReason.CLIENT)
            return
        self.conn.receive_data(data)
        for event in self.conn.events():
            if isinstance(event, Message):
                self._message(event)
            elif isinstance(event, Ping):
                self._send_frames([self.conn.send(event.response())])
            elif isinstance(event, CloseConnection):
                self._peer_closed(event)
            if not self.open or self.client.closing is not None:
                return

    def _message(self, event: Message[Any]) -> None:
        parts = self._parts
        if event.message_finished and parts is None:
            self.handle(event.data)  # the usual case: one frame, one message
            return
        parts = self._parts = [*(parts or ()), event.data]
        if sum(len(part) for part in parts) > ws_messages.MAX_MESSAGE_BYTES:
            self._parts = None
            self._close(ws_messages.MESSAGE_TOO_BIG, "message too big")
            self.client.close(CloseReason.CLIENT)
            return
        if event.message_finished:
            self._parts = None
            self.handle("".join(parts) if isinstance(event, TextMessage) else b"".join(parts))

    def _peer_closed(self, event: CloseConnection) -> None:
        if self.conn.state is ConnectionState.REMOTE_CLOSING:
            self._send_frames([self.conn.send(event.response())])  # the closing handshake's reply
        else:
            self._close(event.code, event.reason or "")  # a frame wsproto could not parse
        self.open = False
        self.client.close(CloseReason.CLIENT)

    def _keepalive(self) -> None:
        if self.pinged:
            self._close(ws_messages.POLICY_VIOLATION, "Ping/Pong timeout")
            self.client.close(CloseReason.CLIENT)
            return
        self._send_frames([self.conn.send(Ping())])
        self.pinged = True
        self.client.writer.last_write = time.monotonic()

    # -- the wire --------------------------------------------------------------

    def _send_frames(self, frames: list[bytes]) -> None:
        data = self._outgoing(frames)
        if not data:
            return
        sent = send_now(self.raw, data)
        if sent < len(data):
            self._send_rest(data[sent:])

    def _send_rest(self, data: bytes) -> None:
        """Wait for room, ``_SEND_POLL_SECONDS`` at a time; give up on an evicted
        stream's socket that stays full past ``EVICT_GRACE_SECONDS``."""
        stuck_since: float | None = None
        while data:
            try:
                sent = self.sock.send(data)
            except TimeoutError:
                if self.client.closing is None:
                    continue
                now = time.monotonic()
                stuck_since = stuck_since or now
                if now - stuck_since >= EVICT_GRACE_SECONDS:
                    self._shut_down()
                    raise BrokenPipeError("an evicted socket stayed full") from None
                continue
            data = data[sent:]

    def _close(self, code: int, reason: Any) -> None:
        if self.conn.state is not ConnectionState.OPEN:
            return
        self.open = False
        with contextlib.suppress(OSError):
            self._send_frames([self.conn.send(CloseConnection(code, close_reason(reason)))])

    def _linger(self) -> None:
        """After a close frame: read until the peer closes too (bounded), so
        closing the socket with its reply unread cannot reset the connection
        and lose the close frame on the way."""
        self._unwatch()
        deadline = time.monotonic() + _LINGER_SECONDS
        with contextlib.suppress(OSError):
            self.raw.shutdown(socket.SHUT_WR)
            self.sock.settimeout(_LINGER_SECONDS)
            while time.monotonic() < deadline and self.sock.recv(READ_BYTES):
                pass

    def _shut_down(self) -> None:
        with contextlib.suppress(OSError):
            self.raw.shutdown(socket.SHUT_RDWR)
