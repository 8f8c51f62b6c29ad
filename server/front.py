"""The worker's front door: a connection's first request, served without gunicorn's per-request path.

A deploy or a network blip makes every tab reconnect at once, and for a
stream's connect gunicorn's request parsing, environ, ``Response`` and date
header were a third of the CPU (docs/benchmarks.md, run V). An app names
the paths it wants served here (``init_app``); for a plain ``GET`` of one of
them (``server.http1.parse_head``) the worker's ``Front`` reads the head,
builds the same environ gunicorn would, calls the same WSGI app and writes
its response on a connection it then closes (``Connection: close``). Every
other connection, and every request ``parse_head`` does not call plain, is
gunicorn's, from its first byte: the front only peeks until it takes a
request.

Not served here: TLS, the PROXY protocol, HTTP/2 prior knowledge, a
``SCRIPT_NAME``, gunicorn's access log (``--access-logfile``), which the
worker checks once (``allowed``). gunicorn's ``pre_request`` and
``post_request`` hooks are not called for these requests.
"""

from __future__ import annotations

import _socket
import errno
import logging
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from functools import lru_cache
from typing import Any

from server import http1
from server.sockets import DONTWAIT, send_now

log = logging.getLogger("jobstream.front")

EXTENSION = "jobstream.front"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_PEEK = _socket.MSG_PEEK | DONTWAIT
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)


def init_app(app: Any, paths: tuple[str, ...], upgrades: tuple[str, ...] = ()) -> None:
    """Ask the worker (``server.worker.JobstreamWorker``) to serve ``paths`` in front of gunicorn,
    and ``upgrades``, whose requests may also ask for a WebSocket (``http1.parse_head``)."""
    app.extensions[EXTENSION] = (tuple(paths), tuple(upgrades))


def allowed(cfg: Any, script_name: str) -> str | None:
    """Why gunicorn's config ``cfg`` rules the front out, or ``None``."""
    if cfg.is_ssl:
        return "TLS"
    if cfg.proxy_protocol not in ("off", False, None):
        return "proxy_protocol"
    if getattr(cfg, "http2_cleartext", "off") in ("prior-knowledge", "both"):
        return "http2_cleartext"
    if cfg.accesslog:
        return "accesslog"
    if script_name:
        return "SCRIPT_NAME"
    return None


class Front:
    """Serves one worker's front-door requests: ``serve`` per accepted connection."""

    def __init__(
        self,
        app: WSGIApp,
        paths: tuple[str, ...],
        base: dict[str, Any],
        secure_headers: dict[str, str],
        trusted: Callable[[str], bool],
        on_request: Callable[[], None] = lambda: None,
        upgrades: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.paths = paths
        self.upgrades = upgrades
        self.base = base  # gunicorn's base_environ
        self.secure_headers = secure_headers
        self.trusted = lru_cache(maxsize=256)(trusted)
        self.on_request = on_request  # the worker's request count (max_requests)
        self._servers: dict[int, tuple[str, int]] = {}

    def serve(self, listener: Any, sock: Any, peer: Any) -> bool:
        """Serve the connection if its first request is one of ours; ``False``:
        nothing was read, gunicorn serves it."""
        raw = getattr(sock, "_sock", sock)  # the OS socket under gevent's wrapper
        if not isinstance(raw, _socket.socket) or not isinstance(peer, tuple):
            return False
        try:
            data = raw.recv(http1.MAX_HEAD, _PEEK)
        except OSError:
            return False  # not arrived yet, or an error: gunicorn's to wait for or report
        head = http1.parse_head(data, self.paths, self.upgrades)
        if head is None:
            return False
        scheme = "http"
        if self.secure_headers and self.trusted(peer[0]):
            found = http1.scheme_of(head, self.secure_headers)
            if found is None:
                return False  # disagreeing scheme fields: gunicorn's 400
            scheme = found
        environ = http1.environ(head, sock, peer, self._server(listener), scheme, self.base)
        if environ is None:
            return False
        resp = Response(sock, head.version, raw)
        try:
            # What the peek saw is all in the socket's buffer: this read never waits.
            raw.recv(head.size, DONTWAIT)
        except OSError:
            sock.close()
            return True
        # This frame lives as long as the stream: keep neither the request's
        # bytes nor its parsed head (about 1 KB a stream).
        del data, head
        self.on_request()
        self._respond(environ, resp)
        return True

    def _server(self, listener: Any) -> tuple[str, int]:
        server = self._servers.get(id(listener))
        if server is None:
            name = listener.getsockname()
            server = self._servers[id(listener)] = (str(name[0]), int(name[1]))
        return server

    def _respond(self, environ: dict[str, Any], resp: Response) -> None:
        body: Iterable[bytes] | None = None
        try:
            body = self.app(environ, resp.start_response)
            del environ  # a stream may last for hours: keep nothing it does not need
            for chunk in body:
                resp.write(chunk)
            resp.finish()
        except OSError as exc:
            if exc.errno not in _GONE:
                log.exception("socket error serving a front-door request")
        except Exception:
            log.exception("error serving a front-door request")
            resp.fail()
        except BaseException:
            pass  # GreenletExit or SystemExit: the worker is stopping (gunicorn lets them pass too)
        finally:
            close = getattr(body, "close", None)
            try:
                if close is not None:
                    close()
            finally:
                resp.sock.close()


class Response:
    """An HTTP/1.x response on a connection that closes after it: the head
    leaves with the first body bytes; chunked on HTTP/1.1 without a length."""

    __slots__ = ("chunked", "head", "headers_sent", "raw", "sock", "version")

    def __init__(self, sock: Any, version: str, raw: Any = None) -> None:
        self.sock = sock
        self.raw = raw  # the OS socket: one non-blocking send first
        self.version = version
        self.head: bytes | None = None
        self.headers_sent = False
        self.chunked = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.headers_sent:
            raise exc_info[1].with_traceback(exc_info[2])
        sized = any(name.lower() == "content-length" for name, _ in headers)
        self.chunked = self.version == "HTTP/1.1" and not sized and not status.startswith(("204", "304"))
        lines = [f"{self.version} {status}\r\n", f"Date: {_http_date()}\r\n", "Connection: close\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        if self.chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        self.head = "".join(lines).encode("latin-1")
        return self.write

    def write(self, data: bytes) -> None:
        if not data:
            return  # an empty chunk would end a chunked body
        framed = b"%X\r\n%s\r\n" % (len(data), data) if self.chunked else data
        if not self.headers_sent:
            assert self.head is not None, "write before start_response"
            framed = self.head + framed
            self.headers_sent = True
        self._send(framed)

    def _send(self, data: bytes) -> None:
        if self.raw is not None:  # once without waiting (server.sockets)
            sent = send_now(self.raw, data)
            if sent == len(data):
                return
            data = data[sent:]
        self.sock.sendall(data)

    def finish(self) -> None:
        """The end of the body: the head if nothing was written, the last chunk."""
        end = b"0\r\n\r\n" if self.chunked else b""
        if not self.headers_sent and self.head is not None:
            end = self.head + end
            self.headers_sent = True
        if end:
            self._send(end)

    def fail(self) -> None:
        """A 500 if nothing is out yet; else the connection just closes."""
        if self.headers_sent:
            return
        body = b'{"error": "internal server error"}'
        head = f"{self.version} 500 Internal Server Error\r\nConnection: close\r\nContent-Type: application/json\r\n"
        try:
            self.sock.sendall(head.encode("ascii") + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass


_date: list[Any] = [0, ""]


def _http_date() -> str:
    """The ``Date`` header, formatted once a second (gunicorn formats it per response)."""
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, formatdate(now, usegmt=True)
    return str(_date[1])
