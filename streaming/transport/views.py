"""HTTP routes of the streaming core: ``/stream``, ``/events``, ``/health``.

Views read everything they need from the request and hand plain values to
the generator: the generator runs after the view returned, outside the
request context.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from server import admin, front
from server.auth import request_grant
from server.errors import (
    UNAVAILABLE_RETRY_SECONDS,
    ApiError,
    error_response,
    fail,
    read_json_object,
    reject_unknown_fields,
)
from server.readers import ReadDenied
from streaming import EXTENSION
from streaming.core.broker import BrokerUnavailable
from streaming.core.events import check_data, check_delivery, check_event_name, encode, encode_comment, encode_retry
from streaming.core.reasons import RefusalReason
from streaming.core.topics import TopicFilter, check_topic
from streaming.ops import metrics
from streaming.ops.service import ShuttingDown, StreamingService
from streaming.transport import websocket, ws_session
from streaming.transport.connect import (
    background,
    begin_stream,
    forget,
    last_event_id,
    new_client,
    query_pairs,
    readable,
    stream_grant,
)
from streaming.transport.fastpath import PATH, REFUSED_KEY, StreamFastPath
from streaming.transport.stream import SHUTTING_DOWN, retry_after_seconds, shutdown_frame

bp = Blueprint("streaming", __name__)
log = logging.getLogger("jobstream.streaming")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DELIVERY_FIELDS = ("private", "priority", "key")
EVENT_FIELDS = ("topic", "event", "data", *DELIVERY_FIELDS)


def init_app(app: Flask, service: StreamingService) -> None:
    """Serve ``service``'s streams, publishes, health, metrics and admin listing from ``app``."""
    app.extensions[EXTENSION] = service
    websocket.init_app(app, service)  # its fast path inside the SSE one: /stream is asked for far more
    app.wsgi_app = StreamFastPath(app.wsgi_app, service)  # type: ignore[method-assign]
    if service.settings.front_door:
        front.init_app(app, (PATH,), upgrades=(ws_session.PATH,))
    app.register_blueprint(bp)
    admin.init_app(app, service)
    metrics.init_app(app, service)

    @app.errorhandler(BrokerUnavailable)
    def _unavailable(exc: BrokerUnavailable) -> Response:
        # Redis (events or the job store) is unreachable: say so, and when to retry.
        return error_response(503, f"service unavailable: {exc}", {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)})

    @app.errorhandler(ShuttingDown)
    def _shutting_down(exc: ShuttingDown) -> Response:
        # A write while draining (``StreamingService.accepting_write``): not
        # attempted, so nothing half-done; the client retries elsewhere or later.
        retry_after = retry_after_seconds(service.settings.retry_ms)
        return error_response(
            503,
            SHUTTING_DOWN,
            {"Retry-After": str(retry_after)},
            reason=RefusalReason.DRAINING,
            retry_after=retry_after,
        )


def service() -> StreamingService:
    svc: StreamingService = current_app.extensions[EXTENSION]
    if not svc.started:
        svc.start()  # outside gunicorn there is no post_worker_init
    return svc


@bp.get("/stream")
def stream() -> Response:
    svc = service()
    # The fast path's parse, not ``request.args``: Werkzeug keeps invalid
    # UTF-8 such as %ED%A0%80 as literal text, and fails on raw non-ASCII.
    args = query_pairs(request.environ)
    try:
        grant = stream_grant(svc, request.environ)
        try:
            topics = readable(grant, TopicFilter([value for key, value in args if key == "topic"]))
            hidden = background(args)
        except ValueError as exc:
            fail(400, str(exc))
    except ReadDenied as denied:
        # Before any stream opens (fast path or not): a browser's EventSource
        # gives up on a non-200, which is what a missing or bad token deserves.
        log.info(
            "stream refused",
            extra={
                "event": "stream_refused",
                "status": denied.status,
                "error": denied.message,
                "ip": request.remote_addr,
            },
        )
        return error_response(denied.status, denied.message, {"WWW-Authenticate": denied.challenge})
    client = new_client(svc, request.environ, topics, grant, hidden)
    # A refusal decided by the fast path (streaming/transport/fastpath.py) is only rendered here.
    refused = request.environ.pop(REFUSED_KEY, None) or svc.registry.admit(client)
    if refused is not None:
        return _refuse(svc, client, refused)
    query_id = next((value for key, value in args if key == "last_event_id"), "")
    body = begin_stream(svc, client, request.environ, last_event_id(request.environ, query_id))
    response = Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
    # The generator goes to gunicorn as it is, not wrapped in Werkzeug's
    # encoding and closing iterators: two fewer layers on every write and in
    # every waiting greenlet's saved stack. (HEAD still gets the wrapped empty
    # body, whose close runs the callback below.)
    response.direct_passthrough = True
    # A generator that never started has no ``finally`` to run.
    response.call_on_close(lambda: forget(svc, client))
    return response


def _refuse(svc: StreamingService, client: Any, reason: RefusalReason) -> Response:
    retry_ms = svc.reconnect_delay_ms()
    log.warning(
        "stream rejected",
        extra={"event": "stream_rejected", "reason": reason, "ip": client.remote_addr, "user_agent": client.user_agent},
    )
    if reason is RefusalReason.DRAINING:
        # Always the soft way, whatever STREAM_REJECT_MODE: this is often a
        # browser that the farewell's ``retry:`` sent back while the drain
        # goes on, and a browser's EventSource never retries after a non-200.
        # Same frame as the farewell: come back after ``retry:`` (to a new
        # server, or to this one's ``shutdown`` again), and end.
        registry = svc.registry
        body = encode_comment(SHUTTING_DOWN) + shutdown_frame(retry_ms, len(registry), registry.max_connections)
        return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
    message = "too many streams from this address" if reason is RefusalReason.PER_IP else "server at capacity"
    stats = svc.registry.stats()
    detail: dict[str, Any] = {
        "reason": reason,
        "active_connections": stats["active_connections"],
        "max_connections": stats["max_connections"],
        "retry_after": retry_after_seconds(retry_ms),
    }
    if svc.settings.reject_mode == "retry":
        # A browser's EventSource gives up for good on any non-200; a 200 that
        # sets a long retry and ends makes unmodified pages back off and return.
        body = (
            encode_retry(retry_ms)
            + encode_comment(message)
            + encode(event="overloaded", data=json.dumps({"error": message, **detail}))
        )
        return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
    status = 429 if reason is RefusalReason.PER_IP else 503
    return error_response(status, message, {"Retry-After": str(detail["retry_after"])}, **detail)


@bp.post("/events")
def publish() -> tuple[Response, int]:
    svc = service()
    body = read_json_object(request)
    reject_unknown_fields(body, EVENT_FIELDS)
    topic = body.get("topic")
    if topic is None:
        fail(400, "missing field: topic")
    event = body.get("event", "message")
    if "data" not in body:
        fail(400, "missing field: data")
    try:
        check_topic(topic)
        check_event_name(event)
        data = check_data(body["data"])
        delivery = check_delivery(**{name: body[name] for name in DELIVERY_FIELDS if name in body})
    except ValueError as exc:
        fail(400, str(exc))
    grant = request_grant()
    if grant is not None and not grant.may_publish(topic):
        # A JWT publishes only where its "publish" patterns say (API_TOKEN: anywhere).
        fail(403, f"token may not publish on topic {topic!r}")
    try:
        with svc.accepting_write():
            published = svc.publish(topic, event, data, delivery)
    except BrokerUnavailable as exc:
        retry = {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)}
        raise ApiError(503, f"event not accepted: broker unavailable ({exc})", retry) from None
    except ValueError as exc:  # private with STREAM_AUTH=off
        fail(400, str(exc))
    # Back-pressure without a lock or a queue: under gevent this lets every
    # stream the fan-out just woke write before this connection's next publish
    # is read, so publishers cannot outrun delivery and overflow the buffers.
    time.sleep(0)
    return jsonify({"id": published.id}), 202


@bp.get("/health")
def health() -> tuple[Response, int]:
    svc = service()
    stats = svc.registry.stats()
    jobs: dict[str, int] = {}
    jobs_ok = True
    if svc.jobs is not None:
        jobs = dict.fromkeys(("total", *svc.jobs.statuses), 0)
        try:
            jobs.update(svc.jobs.counts())
        except BrokerUnavailable as exc:
            jobs_ok = False  # the outage is logged by the broker's reader, once
            log.debug("health: job counts unavailable", extra={"error": str(exc)})
        except Exception:
            jobs_ok = False
            log.exception("health: job counts unavailable")
    broker_up = svc.broker.healthy
    canary = svc.canary.status()
    if svc.shutting_down:
        status = "draining"
    elif not broker_up or not jobs_ok:
        status = "unhealthy"
    elif not canary.ok:
        # HTTP answers but events stopped flowing (streaming/ops/canary.py).
        status = "degraded"
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
            "conflated": stats["conflated"],
            "by_transport": stats["by_transport"],
        },
        "jobs": jobs,
        "broker": "up" if broker_up else "down",
        "canary": canary.as_json(),
        "uptime_seconds": round(time.time() - svc.started_at, 3),
        "pid": os.getpid(),
    }
    return jsonify(body), 200 if status == "healthy" else 503
