"""Reads and writes on an OS socket that never wait.

Under gevent a stream's socket is gevent's wrapper around an OS socket
(``_socket.socket``); gevent's ``send`` and ``sendall`` cost more than the
system call itself for the small write an event is, into a socket that has
room, which is the usual case. So the servers write once straight to the OS
socket and hand only what did not fit to gevent, which waits for room.
"""

from __future__ import annotations

import _socket
from typing import Any

DONTWAIT: int = getattr(_socket, "MSG_DONTWAIT", 0)


def send_now(raw: Any, data: bytes) -> int:
    """Bytes of ``data`` the OS socket ``raw`` took without waiting (0 when its buffer is full);
    any other ``OSError`` is the caller's."""
    try:
        sent: int = raw.send(data, DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return 0
    return sent
