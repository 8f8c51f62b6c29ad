"""HTTP routes of the streaming core: ``/stream``, ``/events``, ``/health``.

Views read everything they need from the request and hand plain values to
the generator: the generator runs after the view returned, outside the
request context.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import socket
import time
from collections.abc import Generator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from streaming import hangup
from streaming.broker import BrokerUnavailable
from streaming.direct import direct_socket
from streaming.events import encode, encode_comment, encode_retry
from streaming.http import error_response, fail, read_json_object, reject_unknown_fields
from streaming.registry import CAPACITY, CLIENT, DRAINING, PER_IP, Client
from streaming.service import StreamingService
from streaming.stream import StreamOptions, open_stream
from streaming.topics import MAX_PATTERN_LENGTH, TopicFilter

bp = Blueprint("streaming", __name__)
log = logging.getLogger("jobstream.streaming")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
REFUSED_KEY = "jobstream.refused"
_BAD_NAME = re.compile(r"[\r\n\0]")
EVENT_FIELDS = ("topic", "event", "data")
JOB_STATUSES = ("pending", "in_progress", "completed", "cancelled", "error")


def service() -> StreamingService:
    svc: StreamingService = current_app.extensions["jobstream"]
    if not svc.started:
        svc.start()  # outside gunicorn there is no post_worker_init
    return svc


@bp.get("/stream")
def stream() -> Response:
    svc = service()
    settings = svc.settings
    try:
        topics = TopicFilter(request.args.getlist("topic"))
    except ValueError as exc:
        fail(400, str(exc))
    # The header is what a browser's EventSource sends on its own reconnects;
    # the query parameter serves clients that must build a new EventSource.
    last_event_id = request.headers.get("Last-Event-ID", "").strip() or request.args.get("last_event_id", "").strip()
    client = Client(
        queue=queue.Queue(maxsize=settings.client_buffer),
        remote_addr=request.remote_addr or "unknown",
        user_agent=request.headers.get("User-Agent", "")[:300],
        topics=topics,
        sock=request.environ.get("gunicorn.socket"),
    )
    # A refusal decided by the fast path (streaming/fastpath.py) is only rendered here.
    refused = request.environ.pop(REFUSED_KEY, None) or svc.registry.admit(client)
    if refused is not None:
        return _refuse(svc, client, refused)
    body = begin_stream(svc, client, request.environ, last_event_id)
    response = Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
    # The generator goes to gunicorn as it is, not wrapped in Werkzeug's
    # encoding and closing iterators: two fewer layers on every write and in
    # every waiting greenlet's saved stack. (HEAD still gets the wrapped empty
    # body, whose close runs the callback below.)
    response.direct_passthrough = True
    # A generator that never started has no ``finally`` to run.
    response.call_on_close(lambda: _forget(svc, client))
    return response


def begin_stream(
    svc: StreamingService, client: Client, environ: dict[str, Any], last_event_id: str
) -> Generator[bytes, None, None]:
    """The body of an admitted stream; shared by the view and the fast path."""
    _tune_stream_socket(client.sock, svc.registry.stale_after)
    client.unwatch = hangup.watch(client.sock, client)
    client.direct, client.chunked = direct_socket(client.sock, environ)
    log.info(
        "stream opened",
        extra={
            "event": "stream_opened",
            "client_id": client.id,
            "ip": client.remote_addr,
            "user_agent": client.user_agent,
            "topics": list(client.topics.patterns),
            "last_event_id": last_event_id or None,
        },
    )
    options = StreamOptions(
        retry_ms=svc.settings.retry_ms,
        clock=svc.clock,
        snapshot=svc.snapshot,
        wants_snapshot=client.topics.could_match_prefix("jobs/"),
        on_replay=svc.on_replay,
        on_reset=svc.on_reset,
    )
    return open_stream(client, svc.registry, svc.broker, options, last_event_id or None, svc.broker.last_key)


def _forget(svc: StreamingService, client: Client) -> None:
    client.stop_watching()
    svc.registry.remove(client.queue, client.closing or CLIENT)


def _tune_stream_socket(sock: Any, seconds: float) -> None:
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


def _refuse(svc: StreamingService, client: Client, reason: str) -> Response:
    retry_ms = svc.reconnect_delay_ms()
    retry_after = str(max(1, math.ceil(retry_ms / 1000)))
    stats = svc.registry.stats()
    message = {
        CAPACITY: "server at capacity",
        PER_IP: "too many streams from this address",
        DRAINING: "server shutting down",
    }[reason]
    log.warning(
        "stream rejected",
        extra={"event": "stream_rejected", "reason": reason, "ip": client.remote_addr, "user_agent": client.user_agent},
    )
    detail: dict[str, Any] = {
        "reason": reason,
        "active_connections": stats["active_connections"],
        "max_connections": stats["max_connections"],
        "retry_after": int(retry_after),
    }
    if svc.settings.reject_mode == "retry":
        # A browser's EventSource gives up for good on any non-200; a 200 that
        # sets a long retry and ends makes unmodified pages back off and return.
        name = "shutdown" if reason == DRAINING else "overloaded"
        body = (
            encode_retry(retry_ms)
            + encode_comment(message)
            + encode(event=name, data=json.dumps({"error": message, **detail}))
        )
        return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
    status = 429 if reason == PER_IP else 503
    return error_response(status, message, {"Retry-After": retry_after}, **detail)


@bp.post("/events")
def publish() -> tuple[Response, int]:
    svc = service()
    body = read_json_object(request)
    reject_unknown_fields(body, EVENT_FIELDS)
    topic = body.get("topic")
    if topic is None:
        fail(400, "missing field: topic")
    if not isinstance(topic, str) or not topic.strip():
        fail(400, "topic must be a non-empty string")
    if len(topic) > MAX_PATTERN_LENGTH or _BAD_NAME.search(topic) or "*" in topic:
        fail(400, f"topic must be at most {MAX_PATTERN_LENGTH} characters without '*', CR, LF or NUL")
    event = body.get("event", "message")
    if not isinstance(event, str) or not event or len(event) > 100 or _BAD_NAME.search(event):
        fail(400, "event must be a non-empty string of at most 100 characters without CR, LF or NUL")
    if "data" not in body:
        fail(400, "missing field: data")
    try:
        published = svc.publish(topic, event, body["data"])
    except BrokerUnavailable as exc:
        fail(503, f"event not accepted: broker unavailable ({exc})")
    # Back-pressure without a lock or a queue: under gevent this lets every
    # stream the fan-out just woke write before this connection's next publish
    # is read, so publishers cannot outrun delivery and overflow the buffers.
    time.sleep(0)
    return jsonify({"id": published.id}), 202


@bp.get("/health")
def health() -> tuple[Response, int]:
    svc = service()
    stats = svc.registry.stats()
    jobs = dict.fromkeys(("total", *JOB_STATUSES), 0)
    jobs_ok = True
    if svc.job_counts is not None:
        try:
            jobs.update(svc.job_counts())
        except BrokerUnavailable as exc:
            jobs_ok = False  # the outage is logged by the broker's reader, once
            log.debug("health: job counts unavailable", extra={"error": str(exc)})
        except Exception:
            jobs_ok = False
            log.exception("health: job counts unavailable")
    broker_up = svc.broker.healthy
    if svc.shutting_down:
        status = "draining"
    elif not broker_up or not jobs_ok:
        status = "unhealthy"
    else:
        status = "healthy"
    body = {
        "status": status,
        "timestamp": int(time.time()),
        "stream": {
            "active_connections": stats["active_connections"],
            "total_messages": stats["total_messages"],
            "max_connections": stats["max_connections"],
            "accepted": stats["accepted"],
            "rejected": stats["rejected"],
            "evicted": stats["evicted"],
            "stale": stats["stale"],
            "dropped": stats["dropped"],
        },
        "jobs": jobs,
        "broker": "up" if broker_up else "down",
        "uptime_seconds": round(time.time() - svc.started_at, 3),
        "pid": os.getpid(),
    }
    return jsonify(body), 200 if status == "healthy" else 503
