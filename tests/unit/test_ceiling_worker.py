"""bench/ceiling_worker.py: the bare gevent server the connect figures are read against."""

from __future__ import annotations

import socket
import threading

from bench.ceiling_worker import FIRST, HEALTH, CeilingWorker


def _served(request: bytes, forever: threading.Event) -> bytes:
    worker = CeilingWorker.__new__(CeilingWorker)  # handle needs no gunicorn state
    worker.forever = forever
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(request)
        worker.handle(None, ours, ("127.0.0.1", 1))
        theirs.settimeout(5)
        return theirs.recv(8192)


def test_a_stream_gets_the_head_and_comment_in_one_write_and_waits() -> None:
    released = threading.Event()
    released.set()  # so that handle returns instead of parking
    answer = _served(b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\n\r\n", released)
    assert answer == FIRST
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in answer
    assert answer.endswith(b"\r\n: connected\n\n\r\n")


def test_health_answers_without_waiting() -> None:
    never = threading.Event()
    assert _served(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", never) == HEALTH
