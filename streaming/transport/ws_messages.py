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
from dataclasses import dataclass
from typing import Any

from streaming.core.events import Event

KINDS = ("subscribe", "unsubscribe", "visibility", "ping")
MAX_MESSAGE_BYTES = 64 * 1024


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
