"""The worker's front door (``server.front``) on real socket pairs, no server.

What a client notices: a plain ``GET`` of a front path is answered by the
app (head and first bytes together, chunked, a clean last chunk, the
connection closed); anything else is left unread for gunicorn.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http.wsgi import base_environ

from server import front, http1

Seen = list[dict[str, Any]]


def make_front(app: Callable[..., Any], trusted: bool = True) -> front.Front:
    cfg = Config()
    return front.Front(app, ("/stream",), base_environ(cfg), dict(cfg.secure_scheme_headers), lambda ip: trusted)


def streaming_app(seen: Seen, chunks: list[bytes]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield from chunks

    return app


class Listener:
    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8000)


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def test_a_plain_stream_request_is_served_and_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    seen: Seen = []
    client.sendall(b"GET /stream?topic=a HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 5-0\r\n\r\n")
    served = make_front(streaming_app(seen, [b"retry: 3000\n", b"", b"data: x\n\n"])).serve(
        Listener(), server, ("10.0.0.5", 1234)
    )
    assert served
    reply = read_all(client)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close" in head and b"\r\nTransfer-Encoding: chunked" in head
    assert b"\r\nContent-Type: text/event-stream" in head and b"\r\nDate: " in head
    # The empty write is not a chunk: it would end the body.
    assert body == b"C\r\nretry: 3000\n\r\n9\r\ndata: x\n\n\r\n0\r\n\r\n"
    env = seen[0]
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["HTTP_LAST_EVENT_ID"]) == ("/stream", "topic=a", "5-0")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["SERVER_PORT"]) == ("10.0.0.5", "1234", "8000")
    assert env["gunicorn.socket"] is server


def test_a_stream_being_served_keeps_neither_the_request_bytes_nor_its_head(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # A stream lasts for hours in the front door's frames: whatever they hold, each open
    # stream holds (about 1 KB: run QM in docs/benchmarks.md).
    server, client = pair
    request = b"GET /stream?topic=a HTTP/1.1\r\nHost: h\r\nUser-Agent: tab\r\n\r\n"
    held: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        yield b"retry: 3000\n"
        frame = sys._getframe().f_back  # the body is running: the stream is open
        while frame is not None:
            if frame.f_code.co_filename == front.__file__:
                for name, value in frame.f_locals.items():
                    if isinstance(value, http1.Head) or (isinstance(value, bytes) and b"User-Agent" in value):
                        held.append(f"{frame.f_code.co_name}: {name}")
            frame = frame.f_back

    client.sendall(request)
    assert make_front(app).serve(Listener(), server, ("10.0.0.5", 1234))
    assert read_all(client).endswith(b"0\r\n\r\n")
    assert held == []


def test_http_1_0_is_not_chunked(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
    assert make_front(streaming_app([], [b"a", b"b"])).serve(Listener(), server, ("1.2.3.4", 1))
    head, _, body = read_all(client).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"chunked" not in head
    assert body == b"ab"


def test_a_sized_response_goes_out_as_is(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair

    def refusal(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = b'{"error": "too many streams"}'
        start_response("503 SERVICE UNAVAILABLE", [("Content-Length", str(len(body))), ("Retry-After", "3")])
        return [body]

    client.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
    assert make_front(refusal).serve(Listener(), server, ("1.2.3.4", 1))
    head, _, body = read_all(client).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 SERVICE UNAVAILABLE") and b"Retry-After: 3" in head
    assert b"chunked" not in head
    assert body == b'{"error": "too many streams"}'


@pytest.mark.parametrize(
    "data",
    [
        b"GET /health HTTP/1.1\r\n\r\n",
        b"POST /stream HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        b"GET /stream HTTP/1.1\r\nHost: h\r\n",  # the rest not arrived yet
        b"GET /stream HTTP/1.1\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
    ],
)
def test_anything_else_is_left_unread_for_gunicorn(pair: tuple[socket.socket, socket.socket], data: bytes) -> None:
    server, client = pair
    seen: Seen = []
    client.sendall(data)
    assert not make_front(streaming_app(seen, [b"x"])).serve(Listener(), server, ("1.2.3.4", 1))
    assert seen == []
    server.settimeout(5)
    assert server.recv(65536) == data  # every byte still there for gunicorn's parser


def test_nothing_sent_yet_is_left_to_gunicorn(pair: tuple[socket.socket, socket.socket]) -> None:
    server, _ = pair
    assert not make_front(streaming_app([], [b"x"])).serve(Listener(), server, ("1.2.3.4", 1))


def test_scheme_fields_count_only_from_a_trusted_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    request = b"GET /stream HTTP/1.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    seen: Seen = []
    client.sendall(request)
    assert make_front(streaming_app(seen, [b"x"]), trusted=False).serve(Listener(), server, ("1.2.3.4", 1))
    assert seen[0]["wsgi.url_scheme"] == "http"
    other_server, other_client = socket.socketpair()
    with other_server, other_client:
        other_client.sendall(request)
        assert make_front(streaming_app(seen, [b"x"]), trusted=True).serve(Listener(), other_server, ("1.2.3.4", 1))
        assert seen[1]["wsgi.url_scheme"] == "https"


def test_an_app_error_before_the_head_is_a_json_500(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair

    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    client.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
    assert make_front(broken).serve(Listener(), server, ("1.2.3.4", 1))
    head, _, body = read_all(client).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ") and b"application/json" in head
    assert body == b'{"error": "internal server error"}'


def test_the_body_is_closed_when_the_peer_is_gone(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    closed: list[bool] = []

    def endless(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        try:
            while True:
                yield b"data: x\n\n" * 1000
        finally:
            closed.append(True)

    client.sendall(b"GET /stream HTTP/1.1\r\n\r\n")
    client.close()
    assert make_front(endless).serve(Listener(), server, ("1.2.3.4", 1))
    assert closed == [True]


def test_the_front_is_off_where_gunicorn_must_read_every_byte() -> None:
    cfg = Config()
    assert front.allowed(cfg, "") is None
    assert front.allowed(cfg, "/prefix") == "SCRIPT_NAME"
    cfg.set("accesslog", "-")
    assert front.allowed(cfg, "") == "accesslog"
    cfg = Config()
    cfg.set("proxy_protocol", "v1")
    assert front.allowed(cfg, "") == "proxy_protocol"
    cfg = Config()
    cfg.set("certfile", "/x.pem")
    cfg.set("keyfile", "/x.key")
    assert front.allowed(cfg, "") == "TLS"
