"""Server-Sent Events wire format: pure functions that return bytes.

Follows the WHATWG "event stream" grammar. The one rule that matters for
safety: a value may never contain CR or LF, because either one ends a field
and a blank line ends an event. ``data`` is therefore split on CRLF, CR and
LF into one ``data:`` line per line (the browser joins them back with LF);
``id`` and ``event`` are single-line by construction and rejected otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# CRLF first so it counts as one break, not two (WHATWG: "CRLF | CR | LF").
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NEWLINE = re.compile(r"[\r\n]")


MAX_EVENT_NAME = 100
_BAD_NAME = re.compile(r"[\r\n\0]")
# The names the server itself sends (streaming/transport/stream.py, views.py,
# jobs/feed.py, the token expiry notice): a publisher that could use them
# would forge a snapshot, a farewell or a job on every open board. Refused
# where publisher input is checked (check_event_name), never in
# StreamingService.publish, which the jobs package calls directly.
RESERVED_EVENTS = frozenset({"snapshot", "reset", "shutdown", "overloaded", "job", "token-expired"})


def check_text(field: str, value: str) -> str:
    """``value`` unless it cannot be UTF-8: a lone surrogate, such as JSON's
    ``"\\ud800"``, or URL bytes that were not UTF-8 (``%ED%A0%80``, ``%FF``),
    which a ``surrogateescape`` decode keeps as lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{field} contains a lone surrogate or bytes that are not UTF-8 (not valid Unicode text)"
        ) from None
    return value


def check_event_name(event: Any) -> str:
    """An ``event:`` name a publisher may use; ``ValueError`` naming the rule otherwise.

    ``RESERVED_EVENTS`` are refused: only the server sends them.
    """
    if not isinstance(event, str) or not event or len(event) > MAX_EVENT_NAME or _BAD_NAME.search(event):
        raise ValueError(
            f"event must be a non-empty string of at most {MAX_EVENT_NAME} characters without CR, LF or NUL"
        )
    check_text("event", event)
    if event in RESERVED_EVENTS:
        raise ValueError(
            f"event {event!r} is reserved for the server; reserved names: {', '.join(sorted(RESERVED_EVENTS))}"
        )
    return event


def check_data(data: Any) -> str:
    """An event's ``data`` as wire text; ``ValueError`` when it cannot be encoded."""
    return check_text("data", data_text(data))


def data_text(data: Any) -> str:
    """What an event's ``data`` becomes on the wire: text as-is, JSON otherwise."""
    if isinstance(data, str):
        return data
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def encode(*, data: str, event: str | None = None, id: str | None = None, retry_ms: int | None = None) -> bytes:
    """Encode one event. Each line of ``data`` becomes its own ``data:`` field."""
    parts: list[str] = []
    if id is not None:
        _check_single_line("id", id)
        if "\0" in id:
            raise ValueError("an event id may not contain NUL")
        parts.append(f"id: {id}\n")
    if event is not None:
        _check_single_line("event", event)
        parts.append(f"event: {event}\n")
    if retry_ms is not None:
        parts.append(f"retry: {int(retry_ms)}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_retry(retry_ms: int) -> bytes:
    """A lone ``retry:`` field; browsers apply it without dispatching an event."""
    return f"retry: {int(retry_ms)}\n".encode("ascii")


def encode_comment(text: str = "") -> bytes:
    """A comment line (one per line of ``text``), with no blank line after it.

    Used for keep-alives: it reaches the socket but no handler. A blank line
    would end an event: browsers dispatch nothing for it, but clients that
    keep the last id or ``retry`` (httpx-sse, fetch-event-source) surface an
    empty ``message``.
    """
    lines = _LINE_BREAK.split(text) if text else [""]
    return "".join(f": {line}\n" if line else ":\n" for line in lines).encode("utf-8")


def _check_single_line(name: str, value: str) -> None:
    if _NEWLINE.search(value):
        raise ValueError(f"SSE field {name!r} may not contain CR or LF")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Who may read an event and how urgent it is (``Event``'s fields of
    the same names); what a publisher says beside topic, name and data."""

    private: bool = False
    owner: str | None = None
    low: bool = False
    conflate: str | None = None

    def __post_init__(self) -> None:
        if self.conflate is not None and not self.low:
            raise ValueError("a conflation key needs low priority")


PUBLIC = Delivery()
PRIORITIES = ("high", "low")
MAX_CONFLATION_KEY = 200


_ABSENT: Any = object()  # a field the publisher left out (``null`` is a mistake)


def check_delivery(private: Any = False, priority: Any = _ABSENT, key: Any = _ABSENT) -> Delivery:
    """A publisher's ``private``, ``priority`` and ``key`` as a ``Delivery``;
    ``ValueError`` naming the field that is wrong. No ``priority``: high, or
    low when a ``key`` is given (a key is only for low events). Leave a field
    out by not passing it; ``None`` is a wrong value."""
    if not isinstance(private, bool):
        raise ValueError("private must be true or false (a JSON boolean)")
    if priority is _ABSENT:
        priority = "low" if key is not _ABSENT else "high"
    if key is _ABSENT:
        key = None
    elif key is None:
        raise ValueError(f"key must be a non-empty string of at most {MAX_CONFLATION_KEY} characters")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be 'high' or 'low', got {priority!r}")
    if key is not None:
        if priority != "low":
            raise ValueError("key (a conflation key) needs priority 'low'")
        if not isinstance(key, str) or not key or len(key) > MAX_CONFLATION_KEY:
            raise ValueError(f"key must be a non-empty string of at most {MAX_CONFLATION_KEY} characters")
        check_text("key", key)
    return Delivery(private=private, low=priority == "low", conflate=key)


@dataclass(frozen=True, slots=True)
class Event:
    """One published event, encoded once and shared by every client queue.

    ``key`` is the id as ``(milliseconds, sequence)``, so the hot path compares
    tuples instead of parsing strings. ``private``: only readers whose token
    may subscribe to ``topic`` (and admins, and the operator) get it
    (``Client.may_read``). ``owner``: the event belongs to that user (a job's
    owner, its ``sub``): only that user's readers, admins and the operator
    get it, whatever their patterns; an owned event is always private.
    ``low``: low priority (a job's progress); with ``conflate`` (its key, the
    job id) a full buffer keeps only the newest low event per key
    (``StreamWriter.offer``). None of these changes the bytes on the wire.
    """

    id: str
    topic: str
    event: str
    data: str
    key: tuple[int, int]
    wire: bytes = field(repr=False)
    # The same bytes framed as one HTTP/1.1 chunk, for writes that bypass
    # gunicorn (streaming/core/writer.py); built once per event like ``wire``.
    chunk: bytes = field(repr=False, default=b"")
    private: bool = False
    owner: str | None = None
    low: bool = False
    conflate: str | None = None

    @classmethod
    def create(cls, id: str, topic: str, event: str, data: str, delivery: Delivery | None = None) -> Event:
        from streaming.core.ids import parse_id

        key = parse_id(id)
        if key is None:
            raise ValueError(f"malformed event id {id!r}")
        wire = encode(id=id, event=event, data=data)
        chunk = b"%X\r\n%s\r\n" % (len(wire), wire)
        d = delivery or PUBLIC
        return cls(
            id, topic, event, data, key, wire, chunk, d.private or d.owner is not None, d.owner, d.low, d.conflate
        )

    @property
    def delivery(self) -> Delivery:
        return Delivery(self.private, self.owner, self.low, self.conflate)
