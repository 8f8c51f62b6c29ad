"""From an HTTP request to an admitted client and the body of its stream.

The Flask view and the fast path (``streaming.transport.fastpath``) both
build their client here and both start its stream here, so a stream is the
same whichever path served it. Who may read what (``STREAM_AUTH``, the
request's token) is decided here too, for both: ``stream_grant`` and
``readable`` raise ``server.readers.ReadDenied``, which only the view words.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import weakref
from collections.abc import Generator
from typing import Any
from urllib.parse import parse_qsl

from server.readers import SCOPE, ReadDenied, reader_grant
from server.tokens import OPERATOR, Grant
from streaming.core.client import Client
from streaming.core.reasons import CloseReason
from streaming.core.topics import TopicFilter
from streaming.ops.service import StreamingService
from streaming.transport import hangup
from streaming.transport.stream import StreamOptions, open_stream

log = logging.getLogger("jobstream.streaming")

MAX_USER_AGENT = 300


def stream_grant(svc: StreamingService, environ: dict[str, Any]) -> Grant | None:
    """The grant of the request's token under ``STREAM_AUTH`` (``server.readers``)."""
    return reader_grant(svc.settings, svc.verifier, environ)


def readable(grant: Grant | None, topics: TopicFilter) -> TopicFilter:
    """``topics`` narrowed to what ``grant`` reads (``ValueError``: too many patterns)."""
    if grant is None or grant is OPERATOR:
        return topics
    narrowed = grant.narrow(topics)
    if narrowed is None:
        raise ReadDenied(403, "token grants none of the requested topics", SCOPE)
    return narrowed


QOS = ("foreground", "background")


def background(args: list[tuple[str, str]]) -> bool:
    """``?qos=background``: low events spaced out (``STREAM_BACKGROUND_INTERVAL``);
    ``ValueError`` for a value that is neither."""
    value = next((v for k, v in args if k == "qos"), "foreground")
    if value not in QOS:
        raise ValueError(f"qos must be 'foreground' or 'background', got {value!r}")
    return value == "background"


def new_client(
    svc: StreamingService,
    environ: dict[str, Any],
    topics: TopicFilter,
    grant: Grant | None = None,
    in_background: bool = False,
) -> Client:
    """A client for this request, not yet admitted."""
    client = Client.create(
        svc.settings.client_buffer,
        remote_addr=environ.get("REMOTE_ADDR") or "unknown",
        user_agent=environ.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT],
        topics=topics,
        sock=environ.get("gunicorn.socket"),
        grant=grant,
    )
    if in_background:
        client.writer.space_out(svc.settings.background_interval_seconds)
    return client


def query_pairs(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The query string's ``(name, value)`` pairs, percent-decoded as UTF-8.

    Bytes that are not UTF-8 (``%FF``, or ``%ED%A0%80``, an encoded lone
    surrogate) become lone surrogates (``surrogateescape``) instead of
    U+FFFD, so ``check_text`` refuses them with a 400 rather than letting a
    stream subscribe to a topic nobody can publish.
    """
    query: str = environ.get("QUERY_STRING", "")
    if not query.isascii():
        # PEP 3333: the server decoded the raw request bytes as latin-1.
        try:
            query = query.encode("latin-1").decode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            pass  # not from a WSGI server: already text
    return parse_qsl(query, keep_blank_values=True, errors="surrogateescape")


def last_event_id(environ: dict[str, Any], query_value: str) -> str:
    """The header is what a browser's EventSource sends on its own reconnects;
    the query parameter serves clients that must build a new EventSource."""
    value = environ.get("HTTP_LAST_EVENT_ID", "").strip() or query_value.strip()
    if not value.isascii():
        # Never an id we issued (it gets a reset that echoes it): drop the
        # lone surrogates ``query_pairs`` may have kept, which strict JSON
        # parsers refuse even as escapes.
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def begin_stream(
    svc: StreamingService, client: Client, environ: dict[str, Any], last_event_id: str
) -> Generator[bytes, None, None]:
    """The body of an admitted stream."""
    sock = client.writer.sock
    tune_stream_socket(sock, svc.registry.stale_after)
    client.unwatch = hangup.watch(sock, client)
    client.writer.enable_direct(environ)
    log.info(
        "stream opened",
        extra={
            "event": "stream_opened",
            "client_id": client.id,
            "ip": client.remote_addr,
            "user_agent": client.user_agent,
            "topics": list(client.topics.patterns),
            "sub": (client.grant.sub or None) if client.grant is not None else None,
            "last_event_id": last_event_id or None,
        },
    )
    options = _options(svc)[client.topics.could_match_prefix("jobs/")]
    return open_stream(client, svc.registry, svc.broker, options, last_event_id or None, svc.broker.last_key)


# Built once per service, not per stream: each open stream's generator holds
# its options, and a closure and two bound methods each were 250 bytes a stream.
_shared: weakref.WeakKeyDictionary[StreamingService, tuple[StreamOptions, StreamOptions]] = weakref.WeakKeyDictionary()


def _options(svc: StreamingService) -> tuple[StreamOptions, StreamOptions]:
    """(without, with) the jobs snapshot."""
    options = _shared.get(svc)
    if options is None:
        jobs = svc.jobs
        base = StreamOptions(
            retry_ms=svc.settings.retry_ms,
            clock=svc.clock,
            snapshot=(lambda c: jobs.snapshot(c.topics, c.grant)) if jobs is not None else None,
            on_replay=svc.replayed,
            on_reset=svc.reset,
        )
        options = _shared[svc] = (base, dataclasses.replace(base, wants_snapshot=True))
    return options


def forget(svc: StreamingService, client: Client) -> None:
    """The response was closed, perhaps before its generator ever ran."""
    client.stop_watching()
    svc.registry.remove(client, client.closing or CloseReason.CLIENT)


def tune_stream_socket(sock: Any, seconds: float) -> None:
    """Send small writes at once, and let the kernel abort a connection whose
    peer vanished without a FIN.

    Keep-alive writes to such a peer "succeed" into the send buffer for
    minutes of retransmissions; TCP_USER_TIMEOUT fails them once data stays
    unacknowledged this long, which ends the generator.
    """
    if sock is None:
        return
    try:
        # Every SSE write is small: without NODELAY, Nagle holds a write back
        # until the previous one is acknowledged, and the peer's delayed ACK
        # adds up to 40 ms (the headers and the first chunk are two writes).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
    except OSError:
        log.debug("socket options not supported on this socket")
