"""JSON request and error helpers shared by every blueprint.

Every client mistake becomes ``{"error": "..."}`` with a 4xx status that
names the problem; nothing a client sends can produce a 500.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import Flask, Request, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from server.sqlite import Busy

MAX_BODY_BYTES = 64 * 1024
UNAVAILABLE_RETRY_SECONDS = 5


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def fail(status: int, message: str, **extra: Any) -> NoReturn:
    raise ApiError(status, message, **extra)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    response = jsonify({"error": message, **extra})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def is_json(mimetype: str) -> bool:
    """``application/json`` or ``application/<something>+json`` (RFC 6839)."""
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def has_body(request: Request) -> bool:
    """Whether the request declares a body: a non-zero length, or chunked."""
    if request.content_length is not None:
        return request.content_length > 0
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or an ``ApiError`` (415, 413 or 400)."""
    if not is_json(request.mimetype):
        fail(415, f"Content-Type must be application/json, got {request.content_type or 'none'!r}")
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        fail(413, f"body is {length} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        if length is None:
            # Chunked: Werkzeug's max_content_length stream stops at the
            # limit without saying so; read one byte past it to know.
            raw = request.environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
        else:
            raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        fail(413, f"body exceeds the limit of {MAX_BODY_BYTES} bytes")
    if len(raw) > MAX_BODY_BYTES:
        fail(413, f"body exceeds the limit of {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        fail(400, "body is empty; expected a JSON object")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        fail(400, "body is not UTF-8 text")
    except (ValueError, RecursionError) as exc:
        fail(400, f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        fail(400, f"body must be a JSON object, got {type(body).__name__ if body is not None else 'null'}")
    return body


def install_body_limit(app: Flask) -> None:
    """413 for any declared body over the limit, on every route.

    Flask's MAX_CONTENT_LENGTH acts only when a view reads the body, so a
    route that ignores its body (``POST /jobs/<id>/cancel``) would accept
    one of any size. Chunked bodies have no length up front and are cut off
    by ``read_json_object``.
    """

    @app.before_request
    def _refuse_large_body() -> Response | None:
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            return error_response(413, f"body is {length} bytes; the limit is {MAX_BODY_BYTES}")
        return None


def reject_unknown_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        fail(400, f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(Busy)
    def _busy(exc: Busy) -> Response:
        # The SQLite file stayed locked by another process (server.sqlite).
        return error_response(503, f"service unavailable: {exc}", {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)})

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.headers, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        message = {
            404: "not found",
            405: "method not allowed",
            413: f"body exceeds the limit of {MAX_BODY_BYTES} bytes",
        }.get(code, exc.description or exc.name)
        response = error_response(code, message)
        if code == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
        return response
