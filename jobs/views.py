"""The job API: ``POST /jobs``, ``GET /jobs``, ``GET /jobs/<id>``, ``POST /jobs/<id>/cancel``.

Owners: a job created with a JWT belongs to its ``sub`` (the operator and
admins may name another ``owner``). The jobs API shows and cancels an owned
job only for its owner, admins and the operator; anyone else gets the same
``404`` as for a job that does not exist, so ids do not leak. Readers are
identified as ``/stream``'s are (``server.readers``); cancels by the token
the write guard let in (``server.auth``).

Every client mistake is ``{"error": "..."}`` with a 4xx that names the field
or parameter (``server.errors``); while the worker drains, creating and
cancelling are refused with a 503 (``StreamingService.accepting_write``). A
job is created and announced while this process's runner holds off claiming,
so a stream sees ``created`` before ``started``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from jobs.feed import publisher
from jobs.handlers import HandlerRegistry, ParamsError
from jobs.model import MAX_NAME_LENGTH
from jobs.runner import Runner
from jobs.states import InvalidTransition, Status, parse_status
from jobs.store import EVERYONE, MAX_PAGE, InvalidCursor, JobNotFound, JobStore, Viewer, viewer_for
from server.auth import SCRIPT_HEADER, request_grant
from server.errors import (
    UNAVAILABLE_RETRY_SECONDS,
    ApiError,
    fail,
    has_body,
    is_json,
    read_json_object,
    reject_unknown_fields,
)
from server.readers import ReadDenied, reader_grant
from streaming import BrokerUnavailable, StreamingService, check_text, data_text

bp = Blueprint("jobs", __name__)
log = logging.getLogger("jobstream.jobs")

CREATE_FIELDS = ("type", "params", "name", "owner")
MAX_OWNER_LENGTH = 200
DEFAULT_LIMIT = 50


@dataclass(frozen=True)
class JobsExtension:
    """What the views need, kept in ``app.extensions["jobs"]``."""

    store: JobStore
    runner: Runner
    handlers: HandlerRegistry
    service: StreamingService


def _jobs() -> JobsExtension:
    ext: JobsExtension = current_app.extensions["jobs"]
    if not ext.service.started:
        ext.service.start()  # outside gunicorn: starts the runner on first use
    return ext


@bp.post("/jobs")
def create_job() -> tuple[Response, int, dict[str, str]]:
    ext = _jobs()
    body = read_json_object(request)
    reject_unknown_fields(body, CREATE_FIELDS)
    job_type = body.get("type")
    if not isinstance(job_type, str) or not job_type:
        fail(400, "type must be a non-empty string")
    kind = ext.handlers.get(job_type)
    if kind is None:
        fail(400, f"unknown type {job_type!r}; known types: {', '.join(ext.handlers.names())}")
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        fail(400, "params must be a JSON object")
    try:
        params = kind.validate(params)
    except (ParamsError, ValueError, TypeError) as exc:  # a custom validator's own errors are 400s too
        fail(400, str(exc) or f"bad params for {job_type}")
    name = body.get("name")
    if name is None:
        name = job_type
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        fail(400, f"name must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    owner = _owner(body.get("owner"))
    try:
        # Everything here ends up in the job's events: it must be UTF-8 text.
        check_text("name", name)
        check_text("params", data_text(params))
    except ValueError as exc:
        fail(400, str(exc))
    _refuse_past_the_pending_limit(ext)
    # Refused with 503 once the worker drains (streaming's ShuttingDown).
    with ext.service.accepting_write(), ext.runner.holding_claims():
        job = ext.store.create(job_type, name, params, owner)
        try:
            publisher(ext.service)(job.to_json())
        except BrokerUnavailable as exc:
            # Not announced means not accepted: take it back. If a runner in
            # another process already claimed it, it is accepted after all
            # (201) and its later changes reach the streams as usual.
            if ext.store.withdraw(job.id):
                fail(503, f"job not accepted: broker unavailable ({exc})")
    ext.runner.wake()
    location = url_for("jobs.get_job", job_id=job.id)
    return jsonify(job.to_json()), 201, {"Location": location}


@bp.get("/jobs")
def list_jobs() -> Response:
    ext = _jobs()
    args = request.args
    status = None
    if args.get("status"):
        try:
            status = parse_status(args["status"])
        except ValueError as exc:
            fail(400, f"status: {exc}")
    limit = _limit(args.get("limit"))
    viewer = _reader(ext)
    try:
        page = ext.store.page(status, limit, args.get("cursor") or None, viewer)
    except InvalidCursor as exc:
        fail(400, str(exc))
    return jsonify({"jobs": [j.to_json() for j in page.jobs], "next_cursor": page.next_cursor})


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() also takes "¹" (int() refuses it) and "٣" (int() reads 3);
    # and short, before int() meets 4,300 digits (its limit since 3.11).
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not 1 <= int(raw) <= MAX_PAGE:
        fail(400, f"limit must be an integer from 1 to {MAX_PAGE}, got {raw!r}")
    return int(raw)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    ext = _jobs()
    viewer = _reader(ext)  # a missing or bad token is a 401 whether or not the job exists
    job = ext.store.get(job_id)
    if job is None or not viewer.sees(job):
        fail(404, f"no job {job_id!r}")
    return jsonify(job.to_json())


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    _refuse_a_cross_site_form()
    ext = _jobs()
    with ext.service.accepting_write():
        found = ext.store.get(job_id)  # an owner never changes: checked before the cancel
        if found is None or not _writer().sees(found):
            fail(404, f"no job {job_id!r}")
        try:
            job = ext.store.request_cancel(job_id)
        except JobNotFound as exc:
            fail(404, str(exc))
        except InvalidTransition as exc:
            fail(409, f"job {job_id!r} is already {exc.current.value}")
        if job.status is Status.CANCELLED:
            _announce_quietly(ext, job.to_json())
        else:
            ext.runner.cancel_local(job.id)
    return jsonify(job.to_json())


def _refuse_past_the_pending_limit(ext: JobsExtension) -> None:
    """Bounded work: past ``JOBS_MAX_PENDING`` pending jobs a create is a 503,
    so a burst cannot queue more than the runners will ever catch up with."""
    limit = ext.service.settings.jobs_max_pending
    pending = ext.store.counts()["pending"]  # cheap: a counter, not a scan (jobs.store)
    if pending >= limit:
        raise ApiError(
            503,
            f"too many pending jobs: {pending} (JOBS_MAX_PENDING={limit}); retry later",
            {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)},
            pending=pending,
            limit=limit,
        )


def _owner(given: Any) -> str | None:
    """Who owns a new job: the JWT's ``sub``; ``owner`` names someone else
    only for the operator (``API_TOKEN``), an admin token, or an open server."""
    grant = request_grant()
    if given is None:
        return grant.sub if grant is not None else None
    if not isinstance(given, str) or not given.strip() or len(given) > MAX_OWNER_LENGTH:
        fail(400, f"owner must be a non-empty string of at most {MAX_OWNER_LENGTH} characters")
    try:
        check_text("owner", given)
    except ValueError as exc:
        fail(400, str(exc))
    if grant is not None and not grant.admin and given != grant.sub:
        fail(403, "owner: only the operator or an admin token may create a job for someone else")
    return given


def _reader(ext: JobsExtension) -> Viewer:
    """Whose jobs this read may see (``401`` for a missing or bad token, as on /stream)."""
    settings = ext.service.settings
    try:
        grant = reader_grant(settings, ext.service.verifier, request.environ)
    except ReadDenied as denied:
        raise ApiError(denied.status, denied.message, {"WWW-Authenticate": denied.challenge}) from None
    return viewer_for(grant, readers_checked=settings.stream_auth != "off")


def _writer() -> Viewer:
    """Whose jobs this write may change: a JWT's own and the unowned ones;
    everything for the operator, an admin token and an open server."""
    grant = request_grant()  # None: API_TOKEN, or no key configured at all
    return EVERYONE if grant is None else viewer_for(grant)


def _refuse_a_cross_site_form() -> None:
    """Cancel only from a script, not from a foreign page's ``<form>``.

    Without ``API_TOKEN`` nothing else stops a page on another site from
    posting here with the visitor's browser. A form (or a "simple" fetch) can
    send only ``application/x-www-form-urlencoded``, ``multipart/form-data``
    or ``text/plain`` and no custom header; a JSON content type or
    ``X-Requested-With`` needs a CORS preflight, which only
    ``STREAM_ALLOWED_ORIGINS`` pages pass (server/cors.py). A JSON body must
    be empty or ``{}``: the cancel takes no fields.
    """
    if is_json(request.mimetype):
        if has_body(request):
            reject_unknown_fields(read_json_object(request), ())
        return
    if request.headers.get(SCRIPT_HEADER, "").strip() and not has_body(request):
        return
    fail(
        415,
        "cancel needs Content-Type: application/json (an empty body or {}) or, with no body, an "
        f"{SCRIPT_HEADER} header; got {request.content_type or 'no Content-Type'!r}",
    )


def _announce_quietly(ext: JobsExtension, job: dict[str, Any]) -> None:
    # The cancel is recorded; a broker outage must not turn it into a 5xx.
    try:
        publisher(ext.service)(job)
    except BrokerUnavailable:
        log.warning("job cancel not published", extra={"event": "job_publish_failed", "job_id": job["id"]})
