"""Tokens, trusted proxies, CORS and the admin view, against a real gunicorn.

The guard's rules alone are in ``tests/unit/test_auth.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import create_app
from server.auth import needs_token
from server.settings import Settings
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

TOKEN = "s3cret-token"
ORIGIN = "https://board.example"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("guarded"),
        env={"API_TOKEN": TOKEN, "STREAM_ALLOWED_ORIGINS": f"{ORIGIN}, https://other.example", "TRUSTED_PROXIES": "1"},
    )
    server.start()
    yield server
    server.stop(timeout=10)


def _guarded_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the token must guard, from the app itself."""
    app = create_app(Settings(jobs_db=str(tmp_path / "jobs.db")))
    routes = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "x", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if needs_token(method, path):
                routes.append((method, path))
    return routes


@pytest.mark.timeout(30)
def test_every_guarded_route_answers_401_without_the_token(guarded: ServerProcess, tmp_path: Path) -> None:
    routes = _guarded_routes(tmp_path)
    assert ("POST", "/events") in routes and ("GET", "/admin/clients") in routes
    for method, path in routes:
        for headers, error in (({}, "missing"), ({"Authorization": "Bearer wrong"}, "invalid")):
            response = guarded.http.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert error in response.json()["error"]
    bad = guarded.http.post("/events", json={}, headers={"Authorization": "Bearer wrong"})
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]


@pytest.mark.timeout(30)
def test_every_write_route_refuses_a_body_over_64k(guarded: ServerProcess, tmp_path: Path) -> None:
    body = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    for method, path in _guarded_routes(tmp_path):
        if method == "GET":
            continue
        headers = {**AUTH, "Content-Type": "application/json"}
        response = guarded.http.request(method, path, content=body, headers=headers)
        assert response.status_code == 413, (method, path, response.text)
        assert "limit" in response.json()["error"]


@pytest.mark.timeout(30)
def test_the_token_lets_writes_and_admin_through(guarded: ServerProcess) -> None:
    body = {"topic": "auth/ok", "data": 1}
    assert guarded.http.post("/events", json=body, headers=AUTH).status_code == 202
    lower = {"Authorization": f"bearer {TOKEN}"}
    assert guarded.http.post("/events", json=body, headers=lower).status_code == 202
    assert guarded.http.get("/admin/clients", headers=AUTH).status_code == 200


@pytest.mark.timeout(30)
def test_reads_stay_open_with_a_token_set(guarded: ServerProcess) -> None:
    for path in ("/health", "/metrics"):
        assert guarded.http.get(path).status_code == 200, path
    with SSEClient(guarded.port, params=[("topic", "auth/open")]).open() as stream:
        assert stream.status == 200
    # Unknown routes and methods keep their JSON 404/405 rather than a 401.
    assert guarded.http.post("/nope", json={}).status_code == 404
    response = guarded.http.delete("/events")
    assert response.status_code == 405 and "POST" in response.headers["allow"]


def test_unset_token_warns_once_per_worker(shared_server: ServerProcess) -> None:
    warnings = [r for r in shared_server.log_records() if r.get("event") == "auth_disabled"]
    assert len(warnings) == 1 and warnings[0]["level"] == "WARNING"


@pytest.mark.timeout(30)
def test_cors_preflight_for_an_authorized_post(guarded: ServerProcess) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    response = guarded.http.options("/events", headers=preflight)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    # The actual request carries the header too, and so does its 401.
    ok = guarded.http.post("/events", json={"topic": "cors", "data": 1}, headers={**AUTH, "Origin": ORIGIN})
    assert ok.status_code == 202 and ok.headers["access-control-allow-origin"] == ORIGIN
    denied = guarded.http.post("/events", json={}, headers={"Origin": ORIGIN})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN


@pytest.mark.timeout(30)
def test_cors_only_for_listed_origins_and_not_for_operators(guarded: ServerProcess) -> None:
    stranger = guarded.http.options(
        "/events", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in stranger.headers
    assert (
        "access-control-allow-origin"
        not in guarded.http.get("/admin/clients", headers={**AUTH, "Origin": ORIGIN}).headers
    )
    with SSEClient(guarded.port, params=[("topic", "cors")], headers={"Origin": ORIGIN}).open() as stream:
        assert stream.response_headers["access-control-allow-origin"] == ORIGIN
        assert "origin" in stream.response_headers["vary"].lower()


@pytest.mark.timeout(30)
def test_trusted_proxy_hop_gives_the_client_ip(guarded: ServerProcess, shared_server: ServerProcess) -> None:
    # TRUSTED_PROXIES=1: only the right-most X-Forwarded-For entry (the one
    # our proxy appended) counts; a client-supplied left entry is ignored.
    spoofed = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "User-Agent": "proxied"}
    with SSEClient(guarded.port, params=[("topic", "xff")], headers=spoofed).open():
        clients = guarded.http.get("/admin/clients", headers=AUTH).json()["clients"]
        assert [c["ip"] for c in clients if c["user_agent"] == "proxied"] == ["203.0.113.7"]
    # TRUSTED_PROXIES=0 (default): the header is ignored entirely.
    with SSEClient(shared_server.port, params=[("topic", "xff")], headers=spoofed).open():
        clients = shared_server.http.get("/admin/clients").json()["clients"]
        assert [c["ip"] for c in clients if c["user_agent"] == "proxied"] == ["127.0.0.1"]


@pytest.mark.timeout(30)
def test_admin_clients_lists_streams_sorted_by_lag(guarded: ServerProcess) -> None:
    behind = SSEClient(guarded.port, params=[("topic", "lag/a")], headers={"User-Agent": "behind"}).open()
    fresh = SSEClient(guarded.port, params=[("topic", "lag/b")], headers={"User-Agent": "fresh"}).open()
    try:
        behind.wait(lambda c: c.comments)
        fresh.wait(lambda c: c.comments)
        guarded.http.post("/events", json={"topic": "lag/b", "data": 1}, headers=AUTH)
        fresh.wait_events(1)
        body = guarded.http.get("/admin/clients", params={"sort": "lag"}, headers=AUTH).json()
        mine = [c for c in body["clients"] if c["user_agent"] in ("behind", "fresh")]
        assert [c["user_agent"] for c in mine] == ["behind", "fresh"]
        lags = [c["lag_seconds"] for c in body["clients"]]
        assert lags == sorted(lags, reverse=True)
        assert set(mine[0]) >= {
            "id", "ip", "user_agent", "connected_at", "topics", "events_sent", "queue_depth", "lag_seconds",
        }  # fmt: skip
        assert mine[1]["topics"] == ["lag/b"] and mine[1]["events_sent"] == 1
        bad = guarded.http.get("/admin/clients", params={"sort": "name"}, headers=AUTH)
        assert bad.status_code == 400 and "sort" in bad.json()["error"]
    finally:
        behind.close()
        fresh.close()
