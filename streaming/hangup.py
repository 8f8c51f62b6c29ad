"""Notice at once when a stream's peer closes its side of the connection.

A WSGI app learns of a disconnect only when a write fails, so a closed tab
would keep its slot until the next keep-alive (30 s by default): a page
reloaded or a burst of reconnects then meets "server at capacity" from
slots nobody holds. An SSE client sends nothing after its request, so under
gevent one read watcher on the socket (no greenlet, a few hundred bytes)
fires exactly when the peer sends its FIN or a reset. Unpatched, there is no
event loop to watch with, and keep-alives remain the detector.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

Cancel = Callable[[], None]
_READ = 1  # libev EV_READ


def watch(sock: Any, on_hangup: Callable[[], None]) -> Cancel | None:
    """Call ``on_hangup`` (in the hub) once the peer closes; returns a canceller."""
    if sock is None or not _patched():
        return None
    from gevent import get_hub

    raw = getattr(sock, "_sock", sock)  # the OS socket: peeking must not wait
    try:
        watcher = get_hub().loop.io(raw.fileno(), _READ)
    except (OSError, ValueError):
        return None  # already closed

    def readable() -> None:
        try:
            pending = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return  # woken without data: keep watching
        except OSError:
            pending = b""  # reset by the peer
        # Either way one look is enough: EOF means gone; bytes from a client
        # that talks after its request are left to gunicorn, and the
        # keep-alive writes stay the detector for it.
        cancel()
        if not pending:
            on_hangup()

    def cancel() -> None:
        # Idempotent: called by the watch itself and when the stream ends.
        if watcher.active:
            watcher.stop()

    watcher.start(readable)
    return cancel


def _patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))
