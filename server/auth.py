"""Bearer-token guard for writes and the admin endpoints.

Trust model: ``API_TOKEN`` is one shared secret for operators and trusted
publishers. When it is set, every state-changing request (any method other
than GET, HEAD and OPTIONS, on any route: ``POST /events``, ``POST /jobs``,
``POST /jobs/<id>/cancel`` and whatever is added later) and everything under
``/admin/`` needs ``Authorization: Bearer <token>``. Reads meant for browsers
and infrastructure (``/stream``, ``/health``, ``/metrics``, the board, the
spec) stay open: a browser's ``EventSource`` cannot send headers, and a load
balancer or Prometheus should not need the secret.

With ``JWT_SECRET`` or ``JWT_PUBLIC_KEY`` set (``server.tokens``) the same
routes also take a valid JWT, and the guard is on even without
``API_TOKEN``. The JWT comes from the ``Authorization`` header or, so that a
signed-in page can start and cancel its user's jobs, from the ``JWT_COOKIE``
cookie, but the cookie only on a request no cross-site page can send without
a CORS preflight: a JSON ``Content-Type`` or an ``X-Requested-With`` header
(the "custom request header" defence against CSRF). A ``<form>`` on another
site can send neither, and the preflight lets only ``STREAM_ALLOWED_ORIGINS``
through (``server.cors``). The rules:

* ``API_TOKEN`` is the operator's key: any write, any topic, ``/admin/*``.
* A JWT may write; ``POST /events`` then also needs a ``publish`` pattern
  matching the topic (checked by that view: ``request_grant()``, else 403).
  A job it creates is its ``sub``'s, and it cancels only its own and
  unowned jobs (``jobs.views``).
* ``/admin/*`` takes a JWT only with ``"admin": true`` (403 otherwise).
* A header that is neither: 401 naming why (``invalid token: expired``).

The guard is one ``before_request`` hook, so blueprints need no decorators
and a new write route is guarded by default. With neither key set,
everything stays open and each worker logs one warning at start-up.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, Response, g, request

from server.errors import error_response, is_json
from server.tokens import Grant, TokenError, TokenVerifier, bearer, cookie_token

log = logging.getLogger("jobstream.auth")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A header no cross-site form can send (a fetch with it needs a preflight).
SCRIPT_HEADER = "X-Requested-With"
ADMIN_PREFIX = "/admin/"


def needs_token(method: str, path: str) -> bool:
    return method not in SAFE_METHODS or path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/")


def token_matches(header: str, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (RFC 6750 section 2.1)."""
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant-time on bytes: compare_digest refuses non-ASCII str.
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


def request_grant() -> Grant | None:
    """The grant of the JWT this request was let in with; ``None`` for
    ``API_TOKEN``, for an open server, and on routes the guard spares."""
    grant: Grant | None = g.get("jobstream_grant")
    return grant


def _jwt(cookie: str) -> str | None:
    """The request's JWT: the header's, else the cookie's on a request that
    needed a CORS preflight (see the module docstring)."""
    given = bearer(request.environ)
    if given is not None or not (is_json(request.mimetype) or request.headers.get(SCRIPT_HEADER, "").strip()):
        return given
    return cookie_token(request.environ, cookie)


def init_app(
    app: Flask, api_token: str, verifier: TokenVerifier | None = None, cookie: str = "jobstream_token"
) -> None:
    if not api_token and verifier is None:
        log.warning(
            "API_TOKEN is unset: POST /events, the jobs API and /admin/* are open to anyone who can reach the port",
            extra={"event": "auth_disabled"},
        )
        return
    token = api_token.encode("utf-8")

    @app.before_request
    def _require_token() -> Response | None:
        # Unknown routes and methods fall through to their JSON 404/405.
        if request.url_rule is None or not needs_token(request.method, request.path):
            return None
        header = request.headers.get("Authorization", "")
        if header and token and token_matches(header, token):
            return None
        given = _jwt(cookie) if verifier is not None else None
        if given is not None and verifier is not None:
            try:
                grant = verifier.verify(given)
            except TokenError as exc:
                return error_response(401, str(exc), {"WWW-Authenticate": _INVALID})
            if request.path.startswith(ADMIN_PREFIX) and not grant.admin:
                return error_response(403, "token does not grant admin", {"WWW-Authenticate": _SCOPE})
            g.jobstream_grant = grant
            return None
        if header:
            message, challenge = "invalid bearer token", _INVALID
        else:
            message, challenge = "missing bearer token", 'Bearer realm="jobstream"'
        return error_response(401, message, {"WWW-Authenticate": challenge})


_INVALID = 'Bearer realm="jobstream", error="invalid_token"'
_SCOPE = 'Bearer realm="jobstream", error="insufficient_scope"'
