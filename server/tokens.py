"""JWTs: who a request is, and what it may read and publish.

Trust model. Jobstream verifies tokens and never issues them in production:
the web app that logs users in mints a short-lived JWT per user, with
``JWT_SECRET`` (HS256, shared) or with the private half of ``JWT_PUBLIC_KEY``
(RS256 or ES256, so Jobstream holds nothing that can mint). The algorithm is
pinned by the key: a token's own ``alg`` header chooses nothing, so
``alg: none`` and an HS256 token "signed" with the public key (the classic
key-confusion attack) are both refused. ``exp`` is required; ``aud`` and
``iss`` are checked when configured.

A token travels in ``Authorization: Bearer``, in the ``JWT_COOKIE`` cookie
(what a browser's ``EventSource`` can send) or in ``?access_token=`` (least
safe: URLs end up in proxy logs and browser history; Jobstream's own access
log redacts it, ``server.logformat``). Writes take the header, or the cookie
on requests only a same-origin script can send (``server.auth``); never the
query string.

The claims Jobstream reads: ``sub`` (the user) and ``"jobstream":
{"subscribe": [...], "publish": [...], "admin": bool}``, where each pattern
is a ``topic=`` pattern (``streaming.core.topics``: exact or ``prefix*``).

PyJWT is imported here and nowhere else: ``server.settings`` stays on the
standard library for the unpatched gunicorn master.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

import click
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Flask, current_app
from flask.cli import with_appcontext

from server.settings import ConfigError, Settings
from streaming.core.topics import MAX_PATTERNS, TopicFilter, check_pattern

# Clock skew tolerated between the minting server and this one (RFC 7519
# section 4.1.4 allows "some small leeway"). It widens acceptance only: a
# stream still ends at its token's exp.
LEEWAY_SECONDS = 30
QUERY_PARAM = "access_token"
CLAIM = "jobstream"
EXTENSION = "jobstream.tokens"
DEFAULT_TTL_SECONDS = 3600

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not yet valid"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.DecodeError, "malformed"),
)


class TokenError(Exception):
    """A token that cannot be used; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid token: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token says: who the reader is and what it may do.

    ``subscribe`` and ``publish`` are ``topic=`` patterns; empty grants
    nothing (unlike an empty stream filter, which asks for everything).
    ``exp`` is the token's expiry (epoch seconds): a stream ends there.
    """

    sub: str
    exp: float
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    admin: bool = False
    # ``subscribe`` as a filter, built on the first private event that asks
    # (then once per stream): most streams never get one, and a filter costs
    # about 440 bytes a stream.
    _reads: TopicFilter | None = field(init=False, repr=False, compare=False, default=None)

    def may_subscribe(self, topic: str) -> bool:
        """Whether a ``subscribe`` pattern matches ``topic`` (empty: none does)."""
        if not self.subscribe:
            return False
        reads = self._reads
        if reads is None:
            reads = TopicFilter(self.subscribe)
            object.__setattr__(self, "_reads", reads)
        return reads.matches(topic)

    def may_publish(self, topic: str) -> bool:
        return bool(self.publish) and TopicFilter(self.publish).matches(topic)

    def narrow(self, requested: TopicFilter) -> TopicFilter | None:
        """``requested`` cut down to what this grant may read.

        A requested pattern inside a subscribe pattern is kept; one that is
        wider is narrowed to the subscribe pattern (``jobs/*`` with
        ``jobs/alice/*`` reads ``jobs/alice/*``). No filter asks for all the
        grant allows. ``None``: none of it is readable (the caller refuses;
        an empty ``TopicFilter`` would match everything).
        """
        wanted = requested.patterns if not requested.everything else ("*",)
        kept = dict.fromkeys(p for r in wanted for g in self.subscribe if (p := intersect(r, g)) is not None)
        # Drop what another kept pattern already covers, so a token with many
        # patterns and a filter with many stay within MAX_PATTERNS.
        patterns = [p for p in kept if not any(q != p and intersect(p, q) == p for q in kept)]
        # More than MAX_PATTERNS left (only with wide tokens and long filters):
        # TopicFilter's ValueError, a 400 like any over-long filter.
        return TopicFilter(patterns) if patterns else None


# What ``API_TOKEN`` grants on a stream (``streaming.transport.connect``):
# every topic, private events included. Never a token's grant: compared by
# identity, and the stream it opens is listed and logged as anonymous
# (``sub`` null), as before tokens existed.
OPERATOR = Grant(sub="", exp=math.inf, admin=True)


def intersect(requested: str, granted: str) -> str | None:
    """The topics both patterns match, as one pattern, or ``None`` if none.

    Two patterns' intersection is always one of the two: patterns are exact
    names or prefixes, and two prefixes either nest or are disjoint.
    """
    r_prefix, g_prefix = requested.endswith("*"), granted.endswith("*")
    r = requested[:-1] if r_prefix else requested
    g = granted[:-1] if g_prefix else granted
    if not r_prefix and not g_prefix:
        return requested if r == g else None
    if not r_prefix:
        return requested if r.startswith(g) else None
    if not g_prefix:
        return granted if g.startswith(r) else None
    if r.startswith(g):
        return requested
    return granted if g.startswith(r) else None


class TokenVerifier:
    """Verifies tokens with one key and one pinned algorithm."""

    def __init__(self, key: Any, algorithm: str, audience: str = "", issuer: str = "") -> None:
        self.key = key
        self.algorithm = algorithm
        self.audience = audience or None
        self.issuer = issuer or None
        self.can_mint = algorithm == "HS256"

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier ``settings`` describe, or ``None`` without a key.

        Reads and parses ``JWT_PUBLIC_KEY``; ``ConfigError`` naming it when
        the file is missing, unreadable or not an RSA or P-256 public key.
        """
        if settings.jwt_secret:
            return cls(settings.jwt_secret, "HS256", settings.jwt_audience, settings.jwt_issuer)
        if not settings.jwt_public_key:
            return None
        path = settings.jwt_public_key
        try:
            with open(path, "rb") as file:
                key = load_pem_public_key(file.read())
        except OSError as exc:
            raise ConfigError("JWT_PUBLIC_KEY", path, f"cannot read the file: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise ConfigError("JWT_PUBLIC_KEY", path, f"not a PEM public key: {exc}") from None
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise ConfigError("JWT_PUBLIC_KEY", path, f"an RSA key of {key.key_size} bits; at least 2048")
            algorithm = "RS256"
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            algorithm = "ES256"
        else:
            raise ConfigError("JWT_PUBLIC_KEY", path, "must be an RSA (RS256) or EC P-256 (ES256) public key")
        return cls(key, algorithm, settings.jwt_audience, settings.jwt_issuer)

    def verify(self, token: str) -> Grant:
        """The grant of a valid token; ``TokenError`` otherwise."""
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub"], "verify_signature": True},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {exc.claim}") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(_reason(exc)) from None
        return grant_of(claims)

    def mint(
        self,
        sub: str,
        ttl_seconds: int,
        subscribe: tuple[str, ...] = (),
        publish: tuple[str, ...] = (),
        admin: bool = False,
        now: float | None = None,
    ) -> str:
        """A token for ``sub`` (HS256 only: a public key cannot sign)."""
        if not self.can_mint:
            raise TokenError("a public key verifies only; mint with the private key")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"sub": sub, "iat": issued, "exp": issued + ttl_seconds}
        claims[CLAIM] = {"subscribe": list(subscribe), "publish": list(publish), "admin": bool(admin)}
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self.key, algorithm=self.algorithm)


def _reason(exc: Exception) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid claims" if isinstance(exc, jwt.InvalidTokenError) else "invalid"


def grant_of(claims: Mapping[str, Any]) -> Grant:
    """The ``Grant`` of verified claims; ``TokenError`` if they are malformed."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise TokenError("malformed claims: sub must be a non-empty string")
    ours = claims.get(CLAIM, {})
    if not isinstance(ours, dict):
        raise TokenError(f"malformed claims: {CLAIM} must be an object")
    admin = ours.get("admin", False)
    if not isinstance(admin, bool):
        raise TokenError(f"malformed claims: {CLAIM}.admin must be true or false")
    return Grant(
        sub=sub,
        exp=float(claims["exp"]),
        subscribe=_patterns(ours, "subscribe"),
        publish=_patterns(ours, "publish"),
        admin=admin,
    )


def _patterns(claim: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claim.get(name, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise TokenError(f"malformed claims: {CLAIM}.{name} must be a list of topic patterns")
    if len(value) > MAX_PATTERNS:
        raise TokenError(f"malformed claims: {CLAIM}.{name} has more than {MAX_PATTERNS} patterns")
    try:
        for pattern in value:
            check_pattern(pattern)
    except ValueError as exc:
        raise TokenError(f"malformed claims: {CLAIM}.{name}: {exc}") from None
    return tuple(dict.fromkeys(value))


def bearer(environ: Mapping[str, Any]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 section 2.1)."""
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def cookie_token(environ: Mapping[str, Any], cookie_name: str) -> str | None:
    """The value of the ``cookie_name`` cookie, if the request has one."""
    cookies = environ.get("HTTP_COOKIE")
    if not cookies or cookie_name not in cookies:
        return None
    try:
        morsel = SimpleCookie(cookies).get(cookie_name)
    except CookieError:
        return None
    return morsel.value if morsel is not None and morsel.value else None


def read_token(environ: Mapping[str, Any], cookie_name: str) -> str | None:
    """A stream's token: the header, else the cookie, else ``?access_token=``."""
    token = bearer(environ) or cookie_token(environ, cookie_name)
    if token is not None:
        return token
    query: str = environ.get("QUERY_STRING", "")
    if QUERY_PARAM in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name == QUERY_PARAM and value:
                return value
    return None


def verifier_of(app: Flask) -> TokenVerifier | None:
    verifier: TokenVerifier | None = app.extensions.get(EXTENSION)
    return verifier


def init_app(app: Flask, settings: Settings) -> TokenVerifier | None:
    """Build the verifier (``ConfigError`` for a bad key) and add ``flask token``."""
    verifier = TokenVerifier.from_settings(settings)
    app.extensions[EXTENSION] = verifier
    app.cli.add_command(token_command)
    return verifier


@click.command("token")
@click.option("--sub", required=True, help="The user the token names.")
@click.option("--subscribe", multiple=True, help="A topic pattern the token may read (repeatable).")
@click.option("--publish", multiple=True, help="A topic pattern the token may publish on (repeatable).")
@click.option("--admin", is_flag=True, help="Allow /admin/*.")
@click.option("--ttl", default=DEFAULT_TTL_SECONDS, show_default=True, type=click.IntRange(min=1), help="Seconds.")
@with_appcontext
def token_command(sub: str, subscribe: tuple[str, ...], publish: tuple[str, ...], admin: bool, ttl: int) -> None:
    """Print a JWT signed with JWT_SECRET (for tests and scripts)."""
    verifier = verifier_of(current_app)
    if verifier is None:
        raise click.ClickException("cannot mint: JWT_SECRET is unset")
    if not verifier.can_mint:
        raise click.ClickException("cannot mint: JWT_PUBLIC_KEY can only verify; sign with its private key")
    try:
        for pattern in (*subscribe, *publish):
            check_pattern(pattern)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(verifier.mint(sub, ttl, subscribe, publish, admin))
