"""Direct writes: the fan-out writes an event to an idle stream's socket itself.

At low event rates each event would otherwise wake every stream's greenlet
once: a switch, a generator resume and gunicorn's chunked write, about 40 µs
each in Python, so the thousandth tab heard of a job tens of milliseconds
after the first. A stream whose generator waits in ``get()`` on an empty queue
is *parked*; for it the fan-out sends the event's pre-framed chunk
(``Event.chunk``) with one non-blocking ``send`` and moves on.

Order and safety:

* Only while parked. The fan-out clears ``parked`` before it queues anything
  for the stream (an event it could not write, a keep-alive, a wake-up), so
  from then on the generator writes, after everything written directly.
* Never blocking. A socket that takes nothing gets the event queued as
  usual; one that takes part of it leaves the rest in ``Client.pending``,
  which the generator sends before anything else.
* ``Client.last_key`` is shared, so replays, gap heals and de-duplication see
  direct writes too.
* Only under gevent (the fan-out and the generator then never run at the
  same time), only for plain TCP sockets and HTTP/1.x, where the framing is
  known: chunked for HTTP/1.1, raw bytes for HTTP/1.0, as gunicorn does.
"""

from __future__ import annotations

import _socket
import socket
import ssl
from typing import Any

from streaming.hangup import gevent_patched

ENABLED = True  # the switch: False sends every event through the generator


def direct_socket(sock: Any, environ: dict[str, Any]) -> tuple[Any, bool]:
    """The OS socket the fan-out may write to (or ``None``) and whether to chunk."""
    protocol = environ.get("SERVER_PROTOCOL")
    if not ENABLED or sock is None or not gevent_patched() or protocol not in ("HTTP/1.0", "HTTP/1.1"):
        return None, True
    if isinstance(sock, ssl.SSLSocket) or environ.get("HTTP_VERSION") == "2":
        return None, True
    raw = getattr(sock, "_sock", sock)
    # _socket.socket: after patching, socket.socket is gevent's wrapper class.
    if not isinstance(raw, _socket.socket) or raw.type != socket.SOCK_STREAM:
        return None, True
    return raw, protocol == "HTTP/1.1"
