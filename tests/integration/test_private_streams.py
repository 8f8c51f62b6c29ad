"""Private streams against a real gunicorn: STREAM_AUTH, where tokens come
from, filters narrowed to a token's grant, token-expired at exp, JWT
publishers, and tokens kept out of the logs.

Each refusal goes three ways: a plain GET (the fast path, which must defer
to the view without opening a stream), with an empty chunked body and with
a CORS ``Origin`` (both of which the fast path declines). The rules alone
are in ``tests/unit/test_tokens.py`` and ``tests/unit/test_token_auth.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.support.server import ServerProcess
from tests.support.sse import SSEClient, http_request
from tests.support.tokens import SECRET, mint

ORIGIN = "https://board.example"
API_TOKEN = "operator-key-for-tests"
ALICE = ["builds/alice/*", "news"]
MINTED: list[str] = []  # every token used against ``required``: none may reach its log


def token(**kw: object) -> str:
    minted = mint(**kw)  # type: ignore[arg-type]
    MINTED.append(minted)
    return minted


def _server(factory: pytest.TempPathFactory, name: str, mode: str) -> Iterator[ServerProcess]:
    env = {
        "JWT_SECRET": SECRET,
        "STREAM_AUTH": mode,
        "API_TOKEN": API_TOKEN,
        "STREAM_ALLOWED_ORIGINS": ORIGIN,
        "LOG_LEVEL": "debug",
        "STREAM_KEEPALIVE_INTERVAL": "2",
    }
    server = ServerProcess(factory.mktemp(name), env=env)
    server.start()
    yield server
    server.stop(timeout=10)


@pytest.fixture(scope="module")
def required(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _server(tmp_path_factory, "required", "required")


@pytest.fixture(scope="module")
def optional(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _server(tmp_path_factory, "optional", "optional")


VIAS = ["fast-path", "chunked-view", "cors-view"]


def raw_get(query: str, headers: dict[str, str], via: str) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    body = ""
    if via == "chunked-view":
        extra, body = extra + "Transfer-Encoding: chunked\r\n", "0\r\n\r\n"
    elif via == "cors-view":
        extra += f"Origin: {ORIGIN}\r\n"
    return f"GET /stream?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n{body}".encode()


REFUSALS = [
    ("anonymous", lambda: {}, "", 401, "missing token"),
    ("expired", lambda: {"Authorization": f"Bearer {token(subscribe=ALICE, ttl=-120)}"}, "", 401, "invalid token: expired"),
    ("wrong-secret", lambda: {"Cookie": f"jobstream_token={token(key='x' * 40, subscribe=ALICE)}"}, "", 401, "invalid token: bad signature"),
    ("garbage-in-query", lambda: {}, "access_token=garbage", 401, "invalid token: malformed"),
    ("other-topics", lambda: {"Authorization": f"Bearer {token(subscribe=ALICE)}"}, "topic=builds/bob/*", 403, "token grants none of the requested topics"),
    ("no-subscribe", lambda: {"Authorization": f"Bearer {token(publish=['*'])}"}, "", 403, "token grants none of the requested topics"),
]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize(("case", "headers", "query", "status", "error"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_stream_is_json_before_any_stream_opens(
    required: ServerProcess, via: str, case: str, headers: object, query: str, status: int, error: str
) -> None:
    before = required.health()["stream"]["accepted"]
    response = http_request(required.port, raw_get(query, headers(), via))  # type: ignore[operator]
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == {"error": error}
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="jobstream"')
    if case in ("expired", "wrong-secret", "garbage-in-query"):
        assert 'error="invalid_token"' in challenge
    if status == 403:
        assert 'error="insufficient_scope"' in challenge
    if via == "cors-view":
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert response.headers["access-control-allow-credentials"] == "true"  # withCredentials may read it
    assert required.health()["stream"]["accepted"] == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("via", ["fast-path", "cors-view"])
@pytest.mark.parametrize("source", ["header", "cookie", "query"])
def test_a_token_from_any_source_opens_a_stream_narrowed_to_its_grant(
    required: ServerProcess, source: str, via: str
) -> None:
    jwt = token(subscribe=ALICE)
    headers = {"Origin": ORIGIN} if via == "cors-view" else {}
    params = [("topic", "builds/*")]
    if source == "header":
        headers["Authorization"] = f"Bearer {jwt}"
    elif source == "cookie":
        headers["Cookie"] = f"theme=dark; jobstream_token={jwt}"
    else:
        params.append(("access_token", jwt))
    with SSEClient(required.port, params=params, headers=headers).open() as stream:
        assert stream.status == 200
        stream.wait(lambda c: c.comments)  # connected
        # builds/* was asked for; the token reads builds/alice/* only ("news" was not asked for).
        for topic in ("builds/bob/1", "news", "builds/alice/1"):
            response = required.http.post("/events", json={"topic": topic, "data": topic}, headers=_bearer(API_TOKEN))
            assert response.status_code == 202
        (event,) = stream.wait_events(1, event="message")
        assert event.data == "builds/alice/1"
    clients = required.http.get("/admin/clients", headers=_bearer(API_TOKEN)).json()["clients"]
    assert all(c["topics"] == ["builds/alice/*"] for c in clients if c["sub"] == "alice")


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.mark.timeout(30)
def test_a_stream_ends_with_token_expired_at_its_exp(required: ServerProcess) -> None:
    jwt = token(subscribe=ALICE, ttl=2)
    exp = json.loads(__import__("base64").urlsafe_b64decode(jwt.split(".")[1] + "=="))["exp"]
    started = time.monotonic()
    with SSEClient(required.port, headers={"Cookie": f"jobstream_token={jwt}"}).open() as stream:
        (farewell,) = stream.wait_events(1, timeout=8, event="token-expired")
        assert farewell.json() == {"reason": "token expired", "exp": exp}
        assert farewell.retry is not None
        assert time.time() >= exp - 0.1
        stream.wait_eof(timeout=5)
    assert time.monotonic() - started < 8
    metrics = required.http.get("/metrics").text
    assert 'jobstream_connections_closed_total{reason="token_expired"} 1.0' in metrics


@pytest.mark.timeout(30)
def test_a_jwt_publishes_where_its_patterns_allow(required: ServerProcess) -> None:
    body = {"topic": "builds/alice/7", "data": 1}
    assert (
        required.http.post("/events", json=body, headers=_bearer(token(publish=["builds/alice/*"]))).status_code == 202
    )
    denied = required.http.post("/events", json=body, headers=_bearer(token(publish=["builds/bob/*"])))
    assert denied.status_code == 403 and "may not publish" in denied.json()["error"]
    bad = required.http.post("/events", json=body, headers=_bearer(token(publish=["*"], ttl=-100)))
    assert bad.status_code == 401 and bad.json() == {"error": "invalid token: expired"}


@pytest.mark.timeout(30)
def test_the_operator_key_reads_every_topic(required: ServerProcess) -> None:
    with SSEClient(required.port, params=[("topic", "builds/bob/*")], headers=_bearer(API_TOKEN)).open() as stream:
        assert stream.status == 200


@pytest.mark.timeout(30)
def test_health_and_metrics_stay_open(required: ServerProcess) -> None:
    assert required.http.get("/health").status_code == 200
    assert required.http.get("/metrics").status_code == 200


@pytest.mark.timeout(30)
def test_optional_lets_anonymous_streams_in_and_refuses_bad_tokens(optional: ServerProcess) -> None:
    with SSEClient(optional.port, params=[("topic", "builds/bob/*")]).open() as stream:
        assert stream.status == 200
    for via in VIAS:
        response = http_request(optional.port, raw_get(f"access_token={quote('a.b.c')}", {}, via))
        assert response.status == 401 and json.loads(response.body) == {"error": "invalid token: malformed"}
    with SSEClient(optional.port, headers=_bearer(mint(subscribe=ALICE))).open() as stream:
        assert stream.status == 200


@pytest.mark.timeout(30)
def test_no_token_reaches_the_log(required: ServerProcess) -> None:
    # Last in this module: every token the tests above sent, in every place.
    assert len(MINTED) > 10
    log = required.log()
    assert "stream opened" in log and "stream refused" in log
    leaked = [t for t in MINTED if t in log or t.split(".")[2] in log]
    assert leaked == []
    opened = [r for r in required.log_records() if r.get("event") == "stream_opened" and r.get("sub") == "alice"]
    assert opened and all(r["topics"] == ["builds/alice/*"] or r["topics"] == ALICE for r in opened)
