"""The front door's request head and environ, against gunicorn's own parser.

``server.http1`` may read a request only the way gunicorn would: for every
plain request the environ must equal what ``gunicorn.http.wsgi.create``
builds from the same bytes, and anything else must be left to gunicorn
(``None``).
"""

from __future__ import annotations

from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from gunicorn.http.wsgi import base_environ, create

from server import http1

PATHS = ("/stream",)
PEER = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 8000)
# Differ by design: objects made per request, and gunicorn's 103 Early Hints callback.
NOT_COMPARED = {"wsgi.input", "gunicorn.socket", "wsgi.early_hints", "wsgi.errors"}


def gunicorn_environ(data: bytes, cfg: Config, peer: tuple[str, int] = PEER) -> dict[str, Any]:
    req = next(iter(RequestParser(cfg, iter([data]), peer)))
    _, env = create(req, None, peer, SERVER, cfg)
    return dict(env)


def front_environ(data: bytes, cfg: Config, trusted: bool = True) -> dict[str, Any] | None:
    head = http1.parse_head(data, PATHS)
    if head is None:
        return None
    scheme = http1.scheme_of(head, dict(cfg.secure_scheme_headers)) if trusted else "http"
    if scheme is None:
        return None
    return http1.environ(head, None, PEER, SERVER, scheme, base_environ(cfg))


def compared(env: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k not in NOT_COMPARED}


PLAIN = [
    b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /stream?topic=jobs/*&topic=a%20b&last_event_id=1-2 HTTP/1.1\r\nHost: h:8000\r\n"
    b"User-Agent: Mozilla/5.0 (X11)\r\nAccept: text/event-stream\r\nLast-Event-ID: 17-0\r\n"
    b"Cookie: jobstream_token=abc.def.ghi\r\nAuthorization: Bearer x.y.z\r\nCache-Control: no-cache\r\n\r\n",
    b"GET /stream?topic=a HTTP/1.0\r\n\r\n",
    b"GET /stream? HTTP/1.1\r\nhost: lower.case\r\nx-custom:   spaced value   \r\nAccept:\r\n\r\n",
    b"GET /stream HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"GET /stream HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\nContent-Type: text/plain\r\n\r\n",
]


@pytest.mark.parametrize("data", PLAIN)
def test_a_plain_request_gets_the_environ_gunicorn_builds(data: bytes) -> None:
    cfg = Config()
    ours = front_environ(data, cfg)
    assert ours is not None
    assert compared(ours) == compared(gunicorn_environ(data, cfg))
    assert ours["wsgi.input"].read() == b""


def test_scheme_fields_of_an_untrusted_peer_are_ignored_like_gunicorn() -> None:
    cfg = Config()
    data = b"GET /stream HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\r\n"
    theirs = gunicorn_environ(data, cfg, peer=("198.51.100.7", 1))
    assert theirs["wsgi.url_scheme"] == "http"
    ours = front_environ(data, cfg, trusted=False)
    assert ours is not None and ours["wsgi.url_scheme"] == "http"


def test_disagreeing_scheme_fields_are_left_to_gunicorn() -> None:
    data = b"GET /stream HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n"
    head = http1.parse_head(data, PATHS)
    assert head is not None
    assert http1.scheme_of(head, dict(Config().secure_scheme_headers)) is None


NOT_PLAIN = {
    "another method": b"POST /stream HTTP/1.1\r\n\r\n",
    "HEAD": b"HEAD /stream HTTP/1.1\r\n\r\n",
    "lower-case method": b"get /stream HTTP/1.1\r\n\r\n",
    "another path": b"GET /streams HTTP/1.1\r\n\r\n",
    "a sub-path": b"GET /stream/x HTTP/1.1\r\n\r\n",
    "a percent-encoded path": b"GET /str%65am HTTP/1.1\r\n\r\n",
    "absolute form": b"GET http://h/stream HTTP/1.1\r\n\r\n",
    "a fragment": b"GET /stream#x HTTP/1.1\r\n\r\n",
    "HTTP/2.0": b"GET /stream HTTP/2.0\r\n\r\n",
    "HTTP/0.9 style": b"GET /stream\r\n\r\n",
    "two spaces": b"GET  /stream HTTP/1.1\r\n\r\n",
    "a body length": b"GET /stream HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "chunked": b"GET /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "100-continue": b"GET /stream HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    "an upgrade (WebSocket, h2c)": b"GET /stream HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    "a repeated field": b"GET /stream HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "a repeated field, other case": b"GET /stream HTTP/1.1\r\nCookie: a=1\r\ncookie: b=2\r\n\r\n",
    "space before the colon": b"GET /stream HTTP/1.1\r\nHost : h\r\n\r\n",
    "obs-fold": b"GET /stream HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n",
    "a tab in a value": b"GET /stream HTTP/1.1\r\nX-A: a\tb\r\n\r\n",
    "a control byte": b"GET /stream HTTP/1.1\r\nX-A: a\x01b\r\n\r\n",
    "no colon": b"GET /stream HTTP/1.1\r\nHost\r\n\r\n",
    "a bad name": b"GET /stream HTTP/1.1\r\nX(A): 1\r\n\r\n",
    "non-ASCII": "GET /stream?topic=é HTTP/1.1\r\n\r\n".encode(),
    "a latin-1 value": b"GET /stream HTTP/1.1\r\nX-A: \xe9\r\n\r\n",
    "not complete yet": b"GET /stream HTTP/1.1\r\nHost: h\r\n",
    "pipelined bytes after it": b"GET /stream HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
    "bare LF line ends": b"GET /stream HTTP/1.1\nHost: h\n\n",
    "too many fields": b"GET /stream HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n",
}


@pytest.mark.parametrize("data", list(NOT_PLAIN.values()), ids=list(NOT_PLAIN))
def test_anything_beyond_a_plain_get_is_left_to_gunicorn(data: bytes) -> None:
    assert http1.parse_head(data, PATHS) is None


@pytest.mark.parametrize(
    "field",
    [b"X_Forwarded_For: 1.2.3.4", b"SCRIPT_NAME: /evil"],
)
def test_a_field_name_with_an_underscore_is_left_to_gunicorn(field: bytes) -> None:
    # gunicorn drops such fields (header_map) or reads SCRIPT_NAME from them.
    data = b"GET /stream HTTP/1.1\r\n" + field + b"\r\n\r\n"
    assert front_environ(data, Config()) is None


def test_the_head_size_covers_the_blank_line() -> None:
    data = b"GET /stream?topic=a HTTP/1.1\r\nHost: h\r\n\r\n"
    head = http1.parse_head(data, PATHS)
    assert head is not None
    assert head.size == len(data)
    assert (head.path, head.query, head.target) == ("/stream", "topic=a", "/stream?topic=a")


WEBSOCKET = (
    b"GET /ws HTTP/1.1\r\nHost: h:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://h:8000\r\n\r\n"
)


def test_a_websocket_upgrade_of_an_upgrade_path_gets_the_environ_gunicorn_builds() -> None:
    cfg = Config()
    head = http1.parse_head(WEBSOCKET, PATHS, upgrades=("/ws",))
    assert head is not None
    ours = http1.environ(head, None, PEER, SERVER, "http", base_environ(cfg))
    assert ours is not None
    assert compared(ours) == compared(gunicorn_environ(WEBSOCKET, cfg))
    assert ours["HTTP_UPGRADE"] == "websocket"


@pytest.mark.parametrize(
    ("data", "upgrades"),
    [
        (WEBSOCKET, ()),  # /ws not named as an upgrade path
        (WEBSOCKET.replace(b"GET /ws", b"GET /stream"), ("/ws",)),  # an upgrade of a plain path
        (WEBSOCKET.replace(b"Upgrade: websocket", b"Upgrade: h2c"), ("/ws",)),  # another protocol
        (WEBSOCKET.replace(b"\r\n\r\n", b"\r\nUpgrade: websocket\r\n\r\n"), ("/ws",)),  # repeated
    ],
    ids=["not an upgrade path", "a plain path", "h2c", "a repeated Upgrade"],
)
def test_any_other_upgrade_is_left_to_gunicorn(data: bytes, upgrades: tuple[str, ...]) -> None:
    assert http1.parse_head(data, PATHS, upgrades) is None
