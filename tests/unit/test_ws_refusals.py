"""``/ws`` answers plain HTTP before any upgrade: a request that is not a
WebSocket handshake gets ``426`` naming ``/stream``, and the token and
origin checks answer as on ``/stream``. Real sockets are in
``tests/integration/test_websocket.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.support.apps import app_in
from tests.support.tokens import SECRET, mint

HANDSHAKE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from app_in(tmp_path, jwt_secret=SECRET, stream_auth="required")


def test_a_plain_get_is_told_to_upgrade_and_pointed_at_the_sse_stream(app: Flask) -> None:
    response = app.test_client().get("/ws", headers={"Authorization": f"Bearer {mint(subscribe=['*'])}"})
    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"
    assert response.json == {"error": "upgrade required: /ws speaks WebSocket only; use /stream for SSE"}


def test_a_handshake_without_a_token_is_refused_with_401_before_the_upgrade(app: Flask) -> None:
    response = app.test_client().get("/ws", headers=HANDSHAKE)
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert "error" in response.json  # type: ignore[operator]


def test_a_handshake_with_an_expired_token_is_refused_with_401_naming_why(app: Flask) -> None:
    headers = {**HANDSHAKE, "Authorization": f"Bearer {mint(subscribe=['*'], ttl=-60)}"}
    response = app.test_client().get("/ws", headers=headers)
    assert response.status_code == 401
    assert response.json == {"error": "invalid token: expired"}


def test_a_handshake_from_a_foreign_page_is_refused_with_403(app: Flask) -> None:
    headers = {**HANDSHAKE, "Origin": "https://evil.example", "Authorization": f"Bearer {mint(subscribe=['*'])}"}
    response = app.test_client().get("/ws", headers=headers)
    assert response.status_code == 403
    assert response.json == {"error": "origin not allowed: add it to STREAM_ALLOWED_ORIGINS"}
