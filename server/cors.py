"""CORS for ``/stream`` and the JSON API, when ``STREAM_ALLOWED_ORIGINS`` is set.

Only listed origins (or ``*``) get ``Access-Control-Allow-Origin``; others get
no CORS headers and the browser blocks the response. Credentials (cookies)
are never allowed: the API authenticates with a bearer token, which a page
sends explicitly, so ``Authorization`` is an allowed request header and a
preflight for ``POST`` with it and ``Content-Type: application/json`` is
answered here, before the token guard (browsers send no credentials on a
preflight). ``/admin/*`` and ``/metrics`` are for operators, not pages: no CORS.

One exception: ``GET /stream`` for an origin listed by name (not ``*``) also
gets ``Access-Control-Allow-Credentials: true``, so an ``EventSource`` made
``withCredentials`` can carry its JWT cookie (``server.tokens``). A stream is
a read, and no write ever takes a cookie, so this opens no CSRF.
"""

from __future__ import annotations

from flask import Flask, Response, request

ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Requested-With"
EXPOSE_HEADERS = "Retry-After"
# Browsers cap this (Chromium: 2 h); 10 minutes keeps a changed list visible soon.
MAX_AGE_SECONDS = 600
_NOT_FOR_PAGES = ("/admin/", "/metrics")


def _allowed(origins: frozenset[str], origin: str) -> bool:
    return bool(origin) and ("*" in origins or origin in origins)


def init_app(app: Flask, allowed_origins: tuple[str, ...]) -> None:
    if not allowed_origins:
        return
    origins = frozenset(o.rstrip("/") for o in allowed_origins)

    def applies() -> bool:
        return request.url_rule is not None and not request.path.startswith(_NOT_FOR_PAGES)

    # Registered before the token guard, so a preflight never meets it.
    @app.before_request
    def _preflight() -> Response | None:
        origin = request.headers.get("Origin", "")
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        if not applies() or not _allowed(origins, origin):
            return None  # Flask's plain OPTIONS answer, without CORS headers
        response = Response(status=204)
        methods = sorted(m for m in (request.url_rule.methods or ()) if m != "HEAD")  # type: ignore[union-attr]
        response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
        return response

    @app.after_request
    def _allow_origin(response: Response) -> Response:
        origin = request.headers.get("Origin", "")
        if applies() and _allowed(origins, origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            if request.path == "/stream" and origin in origins:
                response.headers["Access-Control-Allow-Credentials"] = "true"
        response.vary.add("Origin")
        return response
