"""Token verification, grants and where tokens are read, without a server.

Served answers (401/403 on /stream and writes, token-expired, logs) are in
``tests/integration/test_private_streams.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from server.settings import ConfigError, Settings
from server.tokens import QUERY_PARAM, Grant, TokenError, TokenVerifier, intersect, read_token
from streaming.core.topics import TopicFilter
from tests.support.tokens import SECRET, ec_key, mint, public_pem, rsa_key, write_public_key

HS = TokenVerifier(SECRET, "HS256")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forged(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand: what PyJWT itself refuses to produce."""
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = _b64(hmac.new(key, signing.encode(), hashlib.sha256).digest()) if key else ""
    return f"{signing}.{signature}"


def _reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    assert str(caught.value) == f"invalid token: {caught.value.reason}"
    return caught.value.reason


def test_a_valid_token_gives_its_grant() -> None:
    token = mint(subscribe=["jobs/alice/*"], publish=["chat/alice"], admin=True)
    grant = HS.verify(token)
    assert (grant.sub, grant.subscribe, grant.publish, grant.admin) == (
        "alice",
        ("jobs/alice/*",),
        ("chat/alice",),
        True,
    )
    assert grant.exp > time.time()


def test_rs256_and_es256_verify_with_the_public_key(tmp_path: Path) -> None:
    for private, algorithm in ((rsa_key(), "RS256"), (ec_key(), "ES256")):
        path = write_public_key(private, tmp_path / f"{algorithm}.pem")
        verifier = TokenVerifier.from_settings(Settings(jwt_public_key=path, jobs_db="x.db"))
        assert verifier is not None and verifier.algorithm == algorithm and not verifier.can_mint
        assert verifier.verify(mint(private, algorithm=algorithm)).sub == "alice"


NOW = int(time.time())
REFUSED = [
    ("expired", lambda: mint(ttl=-120), "expired"),
    ("within-leeway-is-fine-so-past-leeway", lambda: mint(ttl=-31), "expired"),
    ("wrong-secret", lambda: mint("another-secret-of-at-least-32-bytes-xx"), "bad signature"),
    ("alg-none", lambda: _forged({"alg": "none", "typ": "JWT"}, {"sub": "a", "exp": NOW + 60}, None), "algorithm not allowed"),
    ("missing-exp", lambda: mint(exp=None), "missing claim exp"),
    ("missing-sub", lambda: mint(sub=None), "missing claim sub"),  # type: ignore[arg-type]
    ("not-a-jwt", lambda: "not.a.jwt", "malformed"),
    ("garbage", lambda: "garbage", "malformed"),
    ("exp-not-a-number", lambda: mint(exp="soon"), "malformed"),
    ("not-yet-valid", lambda: mint(nbf=NOW + 3600), "not yet valid"),
    ("claim-not-an-object", lambda: mint(jobstream=["jobs/*"]), "malformed claims: jobstream must be an object"),
    ("subscribe-not-a-list", lambda: mint(jobstream={"subscribe": "jobs/*"}), "malformed claims: jobstream.subscribe must be a list of topic patterns"),
    ("pattern-with-newline", lambda: mint(subscribe=["a\nb"]), "malformed claims: jobstream.subscribe: topic pattern may not contain CR, LF or NUL"),
    ("admin-not-bool", lambda: mint(jobstream={"admin": "yes"}), "malformed claims: jobstream.admin must be true or false"),
    ("empty-sub", lambda: mint(sub=" "), "malformed claims: sub must be a non-empty string"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "reason"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_bad_token_is_refused_with_a_clear_reason(case: str, make: Any, reason: str) -> None:
    assert _reason(HS, make()) == reason


def test_a_token_within_the_leeway_is_accepted() -> None:
    assert HS.verify(mint(ttl=-5)).sub == "alice"


def test_an_hs256_token_signed_with_the_public_key_is_refused(tmp_path: Path) -> None:
    private = rsa_key()
    verifier = TokenVerifier.from_settings(
        Settings(jwt_public_key=write_public_key(private, tmp_path / "k.pem"), jobs_db="x.db")
    )
    assert verifier is not None
    confused = _forged({"alg": "HS256", "typ": "JWT"}, {"sub": "mallory", "exp": NOW + 60}, public_pem(private))
    assert _reason(verifier, confused) == "algorithm not allowed"
    assert _reason(verifier, _forged({"alg": "none"}, {"sub": "m", "exp": NOW + 60}, None)) == "algorithm not allowed"
    assert _reason(verifier, mint(rsa_key(), algorithm="RS256")) == "bad signature"
    assert _reason(verifier, mint()) == "algorithm not allowed"  # an HS256 token with some secret


def test_audience_and_issuer_are_checked_when_configured() -> None:
    verifier = TokenVerifier(SECRET, "HS256", audience="jobstream", issuer="https://app.example")
    ok = mint(aud="jobstream", iss="https://app.example")
    assert verifier.verify(ok).sub == "alice"
    assert _reason(verifier, mint(aud="other", iss="https://app.example")) == "wrong audience"
    assert _reason(verifier, mint(aud="jobstream", iss="https://evil.example")) == "wrong issuer"
    assert _reason(verifier, mint(iss="https://app.example")) == "missing claim aud"
    assert HS.verify(mint(iss="anyone")).sub == "alice"  # not configured: not checked
    # RFC 7519 section 4.1.3: a token naming an audience is refused by anyone not configured as one.
    assert _reason(HS, mint(aud="anything")) == "wrong audience"


# (requested, granted, intersection)
INTERSECTIONS = [
    ("jobs/a", "jobs/a", "jobs/a"),
    ("jobs/a", "jobs/b", None),
    ("jobs/alice/1", "jobs/alice/*", "jobs/alice/1"),
    ("jobs/*", "jobs/alice/*", "jobs/alice/*"),
    ("jobs/alice/*", "jobs/*", "jobs/alice/*"),
    ("jobs/*", "jobs/alice", "jobs/alice"),
    ("jobs/alice/*", "jobs/bob/*", None),
    ("jobs/*", "*", "jobs/*"),
    ("*", "jobs/*", "jobs/*"),
    ("news", "jobs/*", None),
    ("jobs*", "jobs/*", "jobs/*"),
]


@pytest.mark.parametrize(("requested", "granted", "expected"), INTERSECTIONS)
def test_two_patterns_intersect_in_the_narrower(requested: str, granted: str, expected: str | None) -> None:
    assert intersect(requested, granted) == expected


# (requested filter, subscribe patterns, narrowed patterns or None for 403)
NARROWED = [
    ([], ["jobs/alice/*"], ("jobs/alice/*",)),
    (["*"], ["jobs/alice/*", "news"], ("jobs/alice/*", "news")),
    (["jobs/*"], ["jobs/alice/*"], ("jobs/alice/*",)),
    (["jobs/alice/1", "news"], ["jobs/alice/*"], ("jobs/alice/1",)),
    (["jobs/bob/*"], ["jobs/alice/*"], None),
    ([], [], None),
    (["jobs/*", "jobs/alice/1"], ["jobs/alice/*", "*"], ("jobs/*",)),
]


@pytest.mark.parametrize(("requested", "subscribe", "expected"), NARROWED)
def test_a_stream_filter_is_narrowed_to_the_grant(
    requested: list[str], subscribe: list[str], expected: tuple[str, ...] | None
) -> None:
    grant = Grant(sub="alice", exp=0, subscribe=tuple(subscribe))
    narrowed = grant.narrow(TopicFilter(requested))
    assert (narrowed.patterns if narrowed is not None else None) == expected


def test_publish_patterns_decide_where_a_token_may_publish() -> None:
    grant = Grant(sub="a", exp=0, publish=("chat/a", "jobs/a/*"))
    assert grant.may_publish("chat/a") and grant.may_publish("jobs/a/1")
    assert not grant.may_publish("chat/b") and not grant.may_publish("jobs/b")
    assert not Grant(sub="a", exp=0).may_publish("anything")


def test_a_token_is_read_from_the_header_then_the_cookie_then_the_query() -> None:
    header = {"HTTP_AUTHORIZATION": "Bearer from-header"}
    cookie = {"HTTP_COOKIE": "other=1; jobstream_token=from-cookie"}
    query = {"QUERY_STRING": f"topic=a&{QUERY_PARAM}=from-query"}
    assert read_token({**header, **cookie, **query}, "jobstream_token") == "from-header"
    assert read_token({**cookie, **query}, "jobstream_token") == "from-cookie"
    assert read_token(query, "jobstream_token") == "from-query"
    assert read_token({"HTTP_COOKIE": "sid=from-cookie"}, "sid") == "from-cookie"
    assert read_token({**cookie, "HTTP_AUTHORIZATION": "Basic abc"}, "renamed") is None
    assert read_token({"HTTP_COOKIE": 'jobstream_token="unbalanced'}, "jobstream_token") is None
    assert read_token({}, "jobstream_token") is None


def test_a_public_key_file_that_cannot_be_used_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        Settings.from_env({"JWT_PUBLIC_KEY": str(tmp_path / "absent.pem")})
    assert missing.value.name == "JWT_PUBLIC_KEY" and "cannot read" in str(missing.value)
    (tmp_path / "plain.txt").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM file"):
        Settings.from_env({"JWT_PUBLIC_KEY": str(tmp_path / "plain.txt")})
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    settings = Settings.from_env({"JWT_PUBLIC_KEY": str(tmp_path / "bad.pem")})
    with pytest.raises(ConfigError) as invalid:
        TokenVerifier.from_settings(settings)
    assert invalid.value.name == "JWT_PUBLIC_KEY" and "not a PEM public key" in str(invalid.value)


def test_key_settings_that_contradict_each_other_stop_start_up(tmp_path: Path) -> None:
    path = write_public_key(ec_key(), tmp_path / "k.pem")
    with pytest.raises(ConfigError) as both:
        Settings.from_env({"JWT_SECRET": SECRET, "JWT_PUBLIC_KEY": path})
    assert both.value.name == "JWT_PUBLIC_KEY" and "not both" in str(both.value)
    for mode in ("optional", "required"):
        with pytest.raises(ConfigError) as no_key:
            Settings.from_env({"STREAM_AUTH": mode})
        assert no_key.value.name == "STREAM_AUTH"
    with pytest.raises(ConfigError) as short:
        Settings.from_env({"JWT_SECRET": "short"})
    assert short.value.name == "JWT_SECRET" and "short" not in str(short.value)  # the secret is not echoed
    assert Settings.from_env({"JWT_SECRET": SECRET}).public()["JWT_SECRET"] == "set"
    assert TokenVerifier.from_settings(Settings(jobs_db="x.db")) is None
