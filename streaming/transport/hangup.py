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

from streaming.core.client import Client
from streaming.core.reasons import CloseReason
from streaming.core.writer import gevent_patched

Cancel = Callable[[], None]
_READ = 1  # libev EV_READ


def watch(sock: Any, client: Client) -> Cancel | None:
    """Close ``client`` (reason ``client``) once its peer hangs up; returns a canceller."""
    if sock is None or not gevent_patched():
        return None
    from gevent import get_hub

    raw = getattr(sock, "_sock", sock)  # the OS socket: peeking must not wait
    try:
        watcher = get_hub().loop.io(raw.fileno(), _READ)
    except (OSError, ValueError):
        return None  # already closed
    watch = _Watch(raw, watcher, client)
    watcher.start(watch.readable)
    return watch  # callable: cancels (no bound method kept per stream)


class _Watch:
    # One per open stream: slots, and bound methods instead of closures.
    __slots__ = ("client", "raw", "watcher")

    def __init__(self, raw: Any, watcher: Any, client: Client) -> None:
        self.raw, self.watcher, self.client = raw, watcher, client

    def readable(self) -> None:
        """Runs in the hub: must not block (a non-blocking peek)."""
        try:
            pending = self.raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return  # woken without data: keep watching
        except OSError:
            pending = b""  # reset by the peer
        # Either way one look is enough: EOF means gone; bytes from a client
        # that talks after its request are left to gunicorn, and the
        # keep-alive writes stay the detector for it.
        self.cancel()
        if not pending:
            self.client.close(CloseReason.CLIENT)

    def cancel(self) -> None:
        # Idempotent: called by the watch itself and when the stream ends.
        if self.watcher.active:
            self.watcher.stop()

    __call__ = cancel
