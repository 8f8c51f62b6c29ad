"""Who is reading: the grant a read request carries under ``STREAM_AUTH``.

One rule for every read that shows events or jobs (``/stream``, the jobs
API's ``GET`` routes, ``/me``): with ``STREAM_AUTH=off`` tokens are not even
read and every reader is anonymous; otherwise the token comes from the
header, the cookie or ``?access_token=`` (``server.tokens.read_token``), a
bad one is a ``401``, none is anonymous (``optional``) or a ``401``
(``required``), and ``API_TOKEN`` is the operator, who reads everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request

from server.auth import token_matches
from server.errors import error_response
from server.settings import Settings
from server.tokens import OPERATOR, Grant, TokenError, TokenVerifier, read_token

CHALLENGE = 'Bearer realm="jobstream"'
INVALID = f'{CHALLENGE}, error="invalid_token"'
SCOPE = f'{CHALLENGE}, error="insufficient_scope"'


class ReadDenied(Exception):
    """A read refused before anything is sent: ``401`` (no token where one
    is required, or a bad one) or ``403`` (the token reads none of it)."""

    def __init__(self, status: int, message: str, challenge: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.challenge = challenge


def reader_grant(settings: Settings, verifier: TokenVerifier | None, environ: Mapping[str, Any]) -> Grant | None:
    """The reader's grant; ``None``: anonymous; ``OPERATOR`` for ``API_TOKEN``."""
    if settings.stream_auth == "off" or verifier is None:
        return None  # tokens are not even read
    token = read_token(environ, settings.jwt_cookie)
    if token is None:
        if settings.stream_auth == "required":
            raise ReadDenied(401, "missing token", CHALLENGE)
        return None
    if settings.api_token and token_matches(f"Bearer {token}", settings.api_token.encode()):
        return OPERATOR
    try:
        return verifier.verify(token)
    except TokenError as exc:
        raise ReadDenied(401, str(exc), INVALID) from None


def describe(grant: Grant | None, stream_auth: str) -> dict[str, Any]:
    """The ``GET /me`` body: who this reader is to Jobstream."""
    if grant is None:
        return {"signed_in": False, "sub": None, "admin": False, "subscribe": [], "publish": [], "exp": None,
                "stream_auth": stream_auth}  # fmt: skip
    operator = grant is OPERATOR
    return {
        "signed_in": True,
        "sub": None if operator else grant.sub,
        "admin": grant.admin,
        "subscribe": ["*"] if operator else list(grant.subscribe),
        "publish": ["*"] if operator else list(grant.publish),
        "exp": None if operator else int(grant.exp),
        "stream_auth": stream_auth,
    }


def init_app(app: Flask, settings: Settings, verifier: TokenVerifier | None) -> None:
    """Add ``GET /me``: the board's "signed in as", from the same token a stream would use."""

    def me() -> Response:
        try:
            grant = reader_grant(settings, verifier, request.environ)
        except ReadDenied as denied:
            return error_response(denied.status, denied.message, {"WWW-Authenticate": denied.challenge})
        return jsonify(describe(grant, settings.stream_auth))

    app.add_url_rule("/me", "me", me, methods=["GET"])
