"""``GET /stream`` on the wire: through the worker's front door (server/front.py)
and through gunicorn's own path, where the fast path (streaming/transport/fastpath.py)
sends the head and the opening together.

What the fast path answers, compared with the Flask view, is tested
in-process in ``tests/unit/test_fastpath.py``.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.support.server import ServerProcess

STREAM = b"GET /stream?topic=one-write HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: raw\r\n\r\n"


def head_and_opening(first: bytes) -> dict[str, str]:
    """The fields of a response whose first read holds the head and the whole opening chunk."""
    head, _, body = first.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    fields = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    assert fields["transfer-encoding"] == "chunked"
    assert fields["content-type"] == "text/event-stream; charset=utf-8" and "date" in fields
    size, _, rest = body.partition(b"\r\n")
    chunk = rest[: int(size, 16)]
    assert re.fullmatch(rb"retry: 3000\n: connected c\d+\n", chunk), chunk
    assert rest[int(size, 16) :] == b"\r\n"
    return fields


@pytest.mark.timeout(30)
def test_the_front_door_sends_head_and_first_chunk_in_one_write(shared_server: ServerProcess) -> None:
    """A connection's first request, plain: the front door answers, head and
    opening in one ``send``, and the connection ends with the stream."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(STREAM)
        fields = head_and_opening(sock.recv(65536))
    assert fields["connection"] == "close"
    assert "server" not in fields  # gunicorn's Response would have said "gunicorn"


@pytest.mark.timeout(30)
def test_a_stream_after_another_request_is_gunicorns_and_still_one_write(shared_server: ServerProcess) -> None:
    """A later request on a kept-alive connection (nginx's upstream keep-alive)
    never reaches the front door: gunicorn serves it, with the fast path's one write."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
        head, _, body = reply.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)
        sock.sendall(STREAM)
        fields = head_and_opening(body[length:] or sock.recv(65536))
    assert fields["connection"] == "keep-alive" and fields["server"] == "gunicorn"
