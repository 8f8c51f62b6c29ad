"""``GET /stream`` without Flask's request dispatch.

A tab opening a stream is the one request that arrives by the thousand at
once (a deploy, a network blip, a morning). Flask's request context, URL
matching and response wrapping were a third of a connect's CPU, so the
plain case is served here, in front of Flask, with the same code after
admission (``connect.begin_stream``) and the same response headers.

Everything unusual goes to the Flask view, which stays the complete
implementation: HEAD and OPTIONS, a request with a body, a non-ASCII query,
a bad topic filter (its 400), a cross-origin request when CORS is
configured, and every refusal (rendered by the view from the reason decided
here, so admission runs once; a missing, bad or too narrow token is decided
again there, by the same ``connect.stream_grant`` and ``connect.readable``).
Flask's ``before_request`` hooks do not run here: today none applies to a
plain ``GET /stream`` (the token guard spares reads, the body limit needs a
body, CORS adds only ``Vary`` without an ``Origin``); a new hook that must
see streams has to be mirrored here.

Under gunicorn's HTTP/1 worker the response head and the stream's first
chunk leave in one ``send`` instead of two. That uses gunicorn's own
``Response`` (``start_response`` is its bound method) to build the head, and
is skipped for any other server or response class.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

from server.readers import ReadDenied
from streaming.core.topics import TopicFilter
from streaming.ops.service import StreamingService
from streaming.transport.connect import (
    background,
    begin_stream,
    last_event_id,
    new_client,
    query_pairs,
    readable,
    stream_grant,
)
from streaming.transport.stream import shed_environ

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

Body = Generator[bytes, None, None]

PATH = "/stream"
# Where a refusal decided here waits for the Flask view to word it.
REFUSED_KEY = "jobstream.refused"
HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
]


class StreamFastPath:
    """WSGI middleware: serves plain ``GET /stream``, passes on everything else."""

    def __init__(self, app: WSGIApp, service: StreamingService) -> None:
        self.app = app
        self.service = service
        self.headers = list(HEADERS)
        self.cors = bool(service.settings.allowed_origins)
        if self.cors:
            # What the Flask path's CORS hook adds to a same-origin response.
            self.headers.append(("Vary", "Origin"))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "GET" or not self._plain(environ):
            return self.app(environ, start_response)
        svc = self.service
        try:
            grant = stream_grant(svc, environ)
            args = query_pairs(environ)
            topics = readable(grant, TopicFilter([value for key, value in args if key == "topic"]))
            hidden = background(args)
        except (ValueError, ReadDenied):
            return self.app(environ, start_response)  # the view words the 400, 401 or 403
        if not svc.started:
            svc.start()  # outside gunicorn there is no post_worker_init
        client = new_client(svc, environ, topics, grant, hidden)
        refused = svc.registry.admit(client)
        if refused is not None:
            environ[REFUSED_KEY] = refused
            return self.app(environ, start_response)
        query_id = next((value for key, value in args if key == "last_event_id"), "")
        body = begin_stream(svc, client, environ, last_event_id(environ, query_id))
        shed_environ(environ)
        write = start_response("200 OK", self.headers)
        return _send_head_with_first_chunk(write, body)

    def _plain(self, environ: dict[str, Any]) -> bool:
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ:
            return False
        if self.cors and "HTTP_ORIGIN" in environ:
            return False
        query: str = environ.get("QUERY_STRING", "")
        return query.isascii()


def _send_head_with_first_chunk(write: Callable[[bytes], None], body: Body) -> Body:
    """Write the head and the first chunk together; return the rest of ``body``."""
    resp: Any = getattr(write, "__self__", None)
    if not _plain_gunicorn_response(resp):
        return body
    try:
        first = next(body, None)  # the opening: retry, replay or snapshot
        if first is None:
            return body
        head = resp.default_headers()
        head.extend(f"{name}: {value}\r\n" for name, value in resp.headers)
        head.append("\r\n")
        framed = b"%X\r\n%s\r\n" % (len(first), first) if resp.chunked else first
        resp.sock.sendall("".join(head).encode("latin-1") + framed)
    except BaseException:
        body.close()  # gunicorn never saw the iterator, so it cannot close it
        raise
    resp.headers_sent = True
    resp.sent += len(first)
    return body


def _plain_gunicorn_response(resp: Any) -> bool:
    # Exactly gunicorn's HTTP/1 response (not an HTTP/2 or uwsgi subclass)
    # whose head is not out yet and which has a body.
    cls = type(resp)
    return (
        cls.__name__ == "Response"
        and cls.__module__ == "gunicorn.http.wsgi"
        and getattr(resp, "headers_sent", True) is False
        and not getattr(resp, "_omits_body", True)
        and resp.response_length is None
    )
