"""``GET /stream`` through the fast path (streaming/transport/fastpath.py), on the wire.

What the fast path answers, compared with the Flask view, is tested
in-process in ``tests/unit/test_fastpath.py``.
"""

from __future__ import annotations

import re
import socket

import pytest

from tests.support.server import ServerProcess


@pytest.mark.timeout(30)
def test_head_and_first_chunk_leave_in_one_write(shared_server: ServerProcess) -> None:
    """Under gunicorn the response head and the opening are one ``send``,
    so the first read of a connecting client holds both."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(b"GET /stream?topic=one-write HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: raw\r\n\r\n")
        first = sock.recv(65536)
    head, _, body = first.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    fields = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    assert fields["transfer-encoding"] == "chunked" and fields["connection"] == "keep-alive"
    assert fields["content-type"] == "text/event-stream; charset=utf-8" and "date" in fields
    size, _, rest = body.partition(b"\r\n")
    chunk = rest[: int(size, 16)]
    assert re.fullmatch(rb"retry: 3000\n: connected c\d+\n", chunk), chunk
    assert rest[int(size, 16) :] == b"\r\n"
