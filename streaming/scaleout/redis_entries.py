"""How an event is kept as a Redis stream entry: ``topic``, ``event``,
``data``, and ``p 1`` for a private event, ``o <sub>`` for an owned one,
``l <key>`` for a low-priority one. A missing ``p`` is public (entries
written before private events), a missing ``l`` high priority."""

from __future__ import annotations

import logging

from streaming.core.events import Delivery, Event

log = logging.getLogger("jobstream.redis")

PRIVATE_FIELD = "p"  # "1" on a private event's entry, absent otherwise
OWNER_FIELD = "o"  # the owner's ``sub`` on an owned event's entry (a job's), absent otherwise
LOW_FIELD = "l"  # on a low-priority event's entry: its conflation key, or "" for none


def entry_fields(topic: str, event: str, data: str, delivery: Delivery) -> dict[str, str]:
    fields = {"topic": topic, "event": event, "data": data}
    if delivery.private or delivery.owner is not None:
        fields[PRIVATE_FIELD] = "1"
    if delivery.owner is not None:
        fields[OWNER_FIELD] = delivery.owner
    if delivery.low:
        fields[LOW_FIELD] = delivery.conflate or ""
    return fields


def entry_event(entry_id: str, fields: dict[str, str]) -> Event | None:
    try:
        return Event.create(
            entry_id,
            fields["topic"],
            fields.get("event", "message"),
            fields.get("data", ""),
            delivery_of(fields),
        )
    except (KeyError, ValueError):
        log.warning("skipping a malformed stream entry", extra={"event": "bad_entry", "id": entry_id})
        return None


def pairs(fields: dict[str, str] | list[str]) -> dict[str, str]:
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))


def delivery_of(fields: dict[str, str]) -> Delivery:
    low = fields.get(LOW_FIELD)
    return Delivery(fields.get(PRIVATE_FIELD) == "1", fields.get(OWNER_FIELD), low is not None, low or None)
