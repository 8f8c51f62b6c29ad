"""JWTs against the app in process: the write guard, /admin, the ``token``
command, the expiry tick's decision, and the access log's redaction.

Streams over real sockets are in ``tests/integration/test_private_streams.py``.
"""

from __future__ import annotations

import ast
import queue
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from server.logformat import REDACTED, SECRET_PARAMS, GunicornLogger, redact_query
from server.tokens import QUERY_PARAM, Grant, TokenVerifier
from streaming.core.client import Client
from streaming.core.reasons import CloseReason
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.core.writer import WAKE, StreamWriter
from tests.support.apps import app_in
from tests.support.tokens import SECRET, mint

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "operator-key"


def _app(tmp_path: Path, **settings: Any) -> Iterator[Flask]:
    yield from app_in(tmp_path, history_size=0, **settings)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from _app(tmp_path, api_token=API_TOKEN, jwt_secret=SECRET)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_jwt_publishes_only_where_its_publish_patterns_allow(app: Flask) -> None:
    http = app.test_client()
    token = mint(publish=["chat/alice/*"])
    ok = http.post("/events", json={"topic": "chat/alice/1", "data": 1}, headers=_bearer(token))
    assert ok.status_code == 202, ok.json
    other = http.post("/events", json={"topic": "chat/bob", "data": 1}, headers=_bearer(token))
    assert other.status_code == 403 and other.json == {"error": "token may not publish on topic 'chat/bob'"}
    reader = http.post("/events", json={"topic": "chat/alice/1", "data": 1}, headers=_bearer(mint(subscribe=["*"])))
    assert reader.status_code == 403
    operator = http.post("/events", json={"topic": "chat/bob", "data": 1}, headers=_bearer(API_TOKEN))
    assert operator.status_code == 202


def test_a_bad_jwt_on_a_write_is_401_naming_why(app: Flask) -> None:
    http = app.test_client()
    expired = http.post("/events", json={"topic": "t", "data": 1}, headers=_bearer(mint(publish=["*"], ttl=-60)))
    assert expired.status_code == 401 and expired.json == {"error": "invalid token: expired"}
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
    assert http.post("/events", json={"topic": "t", "data": 1}).json == {"error": "missing bearer token"}


def test_a_cookie_token_writes_only_from_a_script(app: Flask) -> None:
    http = app.test_client()
    http.set_cookie("jobstream_token", mint(publish=["*"]))
    # What a <form> on another site can send carries the cookie but not the token's rights.
    form = http.post("/events", data="topic=t&data=1", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 401 and form.json == {"error": "missing bearer token"}
    assert http.post("/events", data='{"topic": "t"}', content_type="text/plain").status_code == 401
    # A JSON body or X-Requested-With needs a CORS preflight cross-site: a same-origin script's.
    assert http.post("/events", json={"topic": "t", "data": 1}).status_code == 202
    created = http.post("/jobs", json={"type": "sleep", "params": {"seconds": 60}})
    assert created.status_code == 201
    cancel = http.post(f"/jobs/{created.json['id']}/cancel", headers={"X-Requested-With": "fetch"})  # type: ignore[index]
    assert cancel.status_code == 200, cancel.json


def test_admin_takes_the_api_token_or_an_admin_jwt(app: Flask) -> None:
    http = app.test_client()
    assert http.get("/admin/clients", headers=_bearer(API_TOKEN)).status_code == 200
    assert http.get("/admin/clients", headers=_bearer(mint(admin=True))).status_code == 200
    plain = http.get("/admin/clients", headers=_bearer(mint(subscribe=["*"], publish=["*"])))
    assert plain.status_code == 403 and plain.json == {"error": "token does not grant admin"}
    assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200


def test_with_jwt_and_no_api_token_writes_need_a_token(tmp_path: Path) -> None:
    for application in _app(tmp_path, jwt_secret=SECRET):
        http = application.test_client()
        assert http.post("/events", json={"topic": "t", "data": 1}).status_code == 401
        assert (
            http.post("/events", json={"topic": "t", "data": 1}, headers=_bearer(mint(publish=["t"]))).status_code
            == 202
        )


def test_the_token_command_mints_a_token_the_server_accepts(app: Flask) -> None:
    args = ["token", "--sub", "alice", "--subscribe", "jobs/alice/*", "--publish", "chat/*", "--admin", "--ttl", "60"]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    grant = TokenVerifier(SECRET, "HS256").verify(result.output.strip())
    assert (grant.sub, grant.subscribe, grant.publish, grant.admin) == ("alice", ("jobs/alice/*",), ("chat/*",), True)
    bad = app.test_cli_runner().invoke(args=["token", "--sub", "a", "--subscribe", "a\nb"])
    assert bad.exit_code != 0 and "CR, LF or NUL" in bad.output


def test_the_token_command_cannot_mint_without_the_secret(tmp_path: Path) -> None:
    for application in _app(tmp_path):
        result = application.test_cli_runner().invoke(args=["token", "--sub", "alice"])
        assert result.exit_code == 1 and "cannot mint: JWT_SECRET is unset" in result.output


def _client(grant: Grant | None) -> Client:
    return Client(
        StreamWriter(queue.Queue(maxsize=5)), remote_addr="10.0.0.1", user_agent="t", topics=TopicFilter(), grant=grant
    )


def test_the_expiry_tick_ends_only_streams_whose_token_expired() -> None:
    registry = Registry(max_connections=10, send_timeout_seconds=5, keepalive_seconds=30)
    anonymous, fresh, stale = _client(None), _client(Grant("a", exp=2000.0)), _client(Grant("b", exp=1000.0))
    for c in (anonymous, fresh, stale):
        assert registry.admit(c) is None
    assert registry.expire(1500.0) == [stale]
    assert stale.closing is CloseReason.TOKEN_EXPIRED and stale.writer.queue.get_nowait() is WAKE
    assert anonymous.closing is None and fresh.closing is None
    assert registry.expire(1500.0) == []  # asked once
    registry.remove(stale, CloseReason.TOKEN_EXPIRED)
    assert registry.stats()["closed_by_reason"][CloseReason.TOKEN_EXPIRED] == 1
    assert registry.expire(2000.0) == [fresh]


REDACTIONS = [
    ("", ""),
    ("topic=jobs/*", "topic=jobs/*"),
    (f"{QUERY_PARAM}=eyJ.x.y", f"{QUERY_PARAM}={REDACTED}"),
    (f"topic=a&{QUERY_PARAM}=eyJ&last_event_id=1", f"topic=a&{QUERY_PARAM}={REDACTED}&last_event_id=1"),
    ("access%5Ftoken=eyJ", f"access%5Ftoken={REDACTED}"),
    ("topic=access_token", "topic=access_token"),
]


@pytest.mark.parametrize(("query", "logged"), REDACTIONS)
def test_the_access_log_never_holds_a_query_token(query: str, logged: str) -> None:
    assert redact_query(query) == logged


def test_the_access_log_atoms_hide_tokens_everywhere() -> None:
    assert {QUERY_PARAM} == SECRET_PARAMS
    logger = GunicornLogger.__new__(GunicornLogger)
    logger.cfg = SimpleNamespace(env_orig={})  # what atoms reads beyond its arguments
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/stream?topic=a&access_token=SECRET1",
        "QUERY_STRING": "topic=a&access_token=SECRET1",
        "PATH_INFO": "/stream",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
    }
    req = SimpleNamespace(headers=[("AUTHORIZATION", "Bearer SECRET2"), ("COOKIE", "jobstream_token=SECRET3")])
    resp = SimpleNamespace(status="200 OK", headers=[], sent=0)
    time = SimpleNamespace(seconds=0, microseconds=1)
    atoms = logger.atoms(resp, req, environ, time)
    assert atoms["r"] == f"GET /stream?topic=a&access_token={REDACTED} HTTP/1.1"
    assert "SECRET" not in repr(atoms)


def test_pyjwt_is_imported_by_server_tokens_only() -> None:
    importers = []
    for path in [
        *ROOT.glob("*.py"),
        *(p for top in ("server", "streaming", "jobs", "board") for p in (ROOT / top).rglob("*.py")),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "jwt" or n.startswith("jwt.") for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == ["server/tokens.py"]
