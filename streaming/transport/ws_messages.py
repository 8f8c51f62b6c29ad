"""The JSON messages of ``GET /ws``, both ways: pure parsing and encoding.

Client to server (one JSON object per text frame)::

    {"type": "subscribe", "topics": [...], "last_event_id": "..."}   # again at any time
    {"type": "unsubscribe", "topics": [...]}
    {"type": "visibility", "hidden": true}
    {"type": "ping"}

Server to client: ``{"type": "event", "id", "event", "topic", "data"}``, and
``snapshot``, ``reset``, ``token-expired`` with the same ``data`` the SSE
stream's events of those names carry; ``{"type": "pong"}``;
``{"type": "error", "error": "..."}`` for a message it could not use.
``data`` is the event's JSON value: what ``POST /events`` was given (a string
published as text arrives as that string, as ``jobstream.js`` reads SSE data).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from streaming.core.events import Event

KINDS = ("subscribe", "unsubscribe", "visibility", "ping")
MAX_MESSAGE_BYTES = 64 * 1024
# Events whose frame is kept: the fan-out offers one event to every socket
# before their senders run, so the newest few cover every sender in step,
# and a sender that fell behind re-encodes (a cost, not an error).
FRAME_CACHE_EVENTS = 256


@dataclass(frozen=True)
class Command:
    kind: str
    topics: tuple[str, ...] = ()
    last_event_id: str | None = None
    hidden: bool = False


def parse(text: str | bytes) -> Command:
    """One client message; ``ValueError`` saying what is wrong with it."""
    if isinstance(text, bytes):
        raise ValueError("messages are JSON text frames, not binary")
    try:
        body = json.loads(text)
    except ValueError:
        raise ValueError("message is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("message must be a JSON object")
    kind = body.get("type")
    if kind not in KINDS:
        raise ValueError(f"type must be one of {', '.join(KINDS)}; got {kind!r}")
    unknown = set(body) - _FIELDS[kind]
    if unknown:
        raise ValueError(f"unknown field for {kind}: {', '.join(sorted(unknown))}")
    if kind in ("subscribe", "unsubscribe"):
        return Command(kind, _topics(body.get("topics")), _last_id(body.get("last_event_id")))
    if kind == "visibility":
        hidden = body.get("hidden")
        if not isinstance(hidden, bool):
            raise ValueError("hidden must be true or false")
        return Command(kind, hidden=hidden)
    return Command(kind)


_FIELDS = {
    "subscribe": {"type", "topics", "last_event_id"},
    "unsubscribe": {"type", "topics"},
    "visibility": {"type", "hidden"},
    "ping": {"type"},
}


def _topics(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError("topics must be a list of topic patterns (strings)")
    return tuple(value)


def _last_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("last_event_id must be a string")
    return value


def _value(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data  # published as text


def event(ev: Event) -> str:
    return _dumps({"type": "event", "id": ev.id, "event": ev.event, "topic": ev.topic, "data": _value(ev.data)})


_frames: dict[tuple[int, int], bytes] = {}


def event_frame(ev: Event) -> bytes:
    """``event(ev)`` as a complete server-to-client text frame (FIN, unmasked,
    no extension), encoded once per event and shared by every socket: the
    JSON and the frame header cost more than the send. Only for sockets that
    negotiated no extension (``permessage-deflate`` frames differ per socket)."""
    frame = _frames.get(ev.key)
    if frame is None:
        if len(_frames) >= FRAME_CACHE_EVENTS:
            del _frames[next(iter(_frames))]  # the oldest (dicts keep insertion order)
        frame = _frames[ev.key] = text_frame(event(ev))
    return frame


def text_frame(text: str) -> bytes:
    """One unmasked final text frame (RFC 6455 section 5.2)."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


def control(kind: str, data: Any = None, id: str | None = None) -> str:
    """``snapshot``, ``reset``, ``token-expired``, ``pong`` and ``error`` frames."""
    body: dict[str, Any] = {"type": kind}
    if id is not None:
        body["id"] = id
    if data is not None:
        body["data"] = data
    return _dumps(body)


def error(message: str) -> str:
    return _dumps({"type": "error", "error": message})


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


# Close codes (RFC 6455 section 7.4.1; 4xxx are ours, docs/websocket.md).
TRY_AGAIN_LATER = 1013
SERVICE_RESTART = 1012
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
SLOW_CONSUMER = 4008
TOKEN_EXPIRED = 4001


def extensions_of(ws: Any) -> list[Any]:
    """The extensions wsproto negotiated for a simple-websocket ``Server`` (unknown: assume some)."""
    proto = getattr(getattr(ws.ws, "connection", None), "_proto", None)
    extensions = getattr(proto, "extensions", None)
    return [True] if extensions is None else list(extensions)
