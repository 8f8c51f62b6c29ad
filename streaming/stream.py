"""The body of one ``/stream`` response, as a generator of bytes.

The view registers the client first and only then builds this generator, so
nothing published after that moment can be missed: a replay reads history
*after* the client's queue is already collecting live events, and events that
appear in both are sent once (ids are compared, not payloads).

Every ``yield`` hands one chunk to gunicorn, which writes it before resuming
the generator; so "resumed after a yield" means "the write succeeded", and
that is when ``last_write`` moves. A failed write closes the generator with
``GeneratorExit``, which is how a WSGI app learns the peer is gone.
"""

from __future__ import annotations

import json
import queue
import socket
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from streaming.broker import Broker, BrokerUnavailable
from streaming.events import encode, encode_comment, encode_retry
from streaming.history import ReplayGap
from streaming.ids import Key, format_id, parse_id
from streaming.registry import CLIENT, EVICTED, SHUTDOWN, STALE, WAKE, Client, Registry
from streaming.registry import KEEPALIVE as KEEPALIVE_TICK

KEEPALIVE = encode_comment("keepalive") + b"\n"
UNAVAILABLE = "unavailable"  # a close reason: the broker could not serve replay or snapshot
# A full queue is drained into one write; more would only delay the first.
MAX_BATCH = 256
MAX_WRITE_BYTES = 64 * 1024

Snapshot = Callable[[Client], Any]


@dataclass(frozen=True)
class StreamOptions:
    retry_ms: int
    clock: Callable[[], float]
    snapshot: Snapshot | None = None  # jobs matching the client's topics
    wants_snapshot: bool = False
    # Observers (metrics), called once per replay or reset, not per event.
    on_replay: Callable[[str], None] | None = None  # "reconnect" or "overflow"
    on_reset: Callable[[str], None] | None = None  # the ReplayGap reason


def open_stream(
    client: Client,
    registry: Registry,
    broker: Broker,
    options: StreamOptions,
    last_event_id: str | None,
    start_key: Key | None,
) -> Generator[bytes, None, None]:
    """Yield the stream for a client that ``registry.admit`` already accepted."""
    reason = CLIENT
    try:
        opening = [encode_retry(options.retry_ms), encode_comment(f"connected {client.id}") + b"\n"]
        # client.last_key: the newest id written (here or by a direct write);
        # anything at or below it arriving later is a duplicate and skipped.
        heal_from = start_key  # where a gap is replayed from while nothing was sent
        sent = 0
        if last_event_id:
            key = parse_id(last_event_id)
            try:
                if key is None:
                    raise ReplayGap("malformed")
                replayed = broker.replay(key, client.topics)
                client.last_key = replayed[-1].key if replayed else key
                opening.extend(e.wire for e in replayed)
                sent += len(replayed)
                _notify(options.on_replay, "reconnect")
            except ReplayGap as gap:
                _notify(options.on_reset, gap.reason)
                opening.append(_reset(gap.reason, last_event_id))
                heal_from = broker.last_key
                opening.append(_snapshot(client, broker, options))
        elif options.wants_snapshot:
            heal_from = broker.last_key
            opening.append(_snapshot(client, broker, options))
        for piece in _pieces(opening):
            yield piece
            client.last_write = options.clock()
        client.events_sent += sent

        get, get_nowait = client.queue.get, client.queue.get_nowait
        while client.closing is None:
            # Parked: from here until something is queued the fan-out writes
            # events for this stream itself (no wake-up, streaming/direct.py).
            # Under gevent nothing runs between this and get() blocking.
            client.parked = client.direct is not None and not client.gap and client.queue.empty()
            # No timeout: the cleanup daemon's keep-alive tick (or an event,
            # a shutdown, an eviction, a hang-up) is what wakes us.
            batch = [get()]
            client.parked = False
            if client.pending is not None:
                # A direct write that only partly fit: its rest goes first,
                # straight to the socket (it is already a framed chunk).
                rest, client.pending = client.pending, None
                client.sock.sendall(rest)
                client.last_write = options.clock()
            if batch[0] is KEEPALIVE_TICK and client.queue.empty():
                yield KEEPALIVE
                client.last_write = options.clock()
                continue
            try:
                while len(batch) < MAX_BATCH:
                    batch.append(get_nowait())
            except queue.Empty:
                pass
            chunks: list[bytes] = []
            if client.gap:
                # The fan-out dropped events while the buffer was full. They
                # are in history (appended before fan-out), so replay them now
                # instead of leaving a hole. Checked after taking the batch so
                # nothing in the batch is newer than what the replay returns.
                client.gap = False
                base = client.last_key or heal_from
                try:
                    if base is None:
                        raise ReplayGap("overflow")
                    batch = [*broker.replay(base, client.topics), *batch]
                    _notify(options.on_replay, "overflow")
                except ReplayGap:
                    _notify(options.on_reset, "overflow")
                    chunks.append(_reset("overflow", format_id(base) if base else ""))
                    chunks.append(_snapshot(client, broker, options))
            count = 0
            for item in batch:
                if (
                    item is WAKE
                    or item is KEEPALIVE_TICK
                    or (client.last_key is not None and item.key <= client.last_key)
                ):
                    continue
                chunks.append(item.wire)
                client.last_key = item.key
                count += 1
            if len(chunks) == 1:  # the common case: one event per wake-up
                yield chunks[0]
                client.last_write = options.clock()
            else:
                for piece in _pieces(chunks):
                    yield piece
                    client.last_write = options.clock()
            client.events_sent += count
        reason = client.closing
        if reason == SHUTDOWN:
            yield _farewell(client)
    except BrokerUnavailable:
        # Replay or the snapshot needs Redis, which is down. End politely: the
        # browser retries later with the same Last-Event-ID and loses nothing
        # (a reset here would throw its position away).
        reason = UNAVAILABLE
        yield encode_retry(options.retry_ms) + encode_comment("broker unavailable, retry later") + b"\n"
    except GeneratorExit:
        reason = client.closing or CLIENT
        raise
    finally:
        client.stop_watching()
        registry.remove(client.queue, reason)
        if reason not in (CLIENT, EVICTED, STALE) and client.sock is not None:
            # The server ended this stream: refuse a follow-up request on the
            # same connection so the client sees EOF right after the last chunk.
            try:
                client.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # the peer already closed


def _pieces(chunks: list[bytes]) -> Iterator[bytes]:
    """Join chunks into writes of at most ``MAX_WRITE_BYTES``.

    One write per wake-up is what makes a busy stream cheap, but a replay of
    the whole history joined at once would hold megabytes per client while
    a slow socket drains it; a few pieces keep memory bounded.
    """
    if len(chunks) == 1:
        yield chunks[0]
        return
    piece: list[bytes] = []
    size = 0
    for chunk in chunks:
        if piece and size + len(chunk) > MAX_WRITE_BYTES:
            yield b"".join(piece)
            piece, size = [], 0
        piece.append(chunk)
        size += len(chunk)
    if piece:
        yield b"".join(piece) if len(piece) > 1 else piece[0]


def _notify(hook: Callable[[str], None] | None, label: str) -> None:
    if hook is not None:
        hook(label)


def _farewell(client: Client) -> bytes:
    retry = client.close_retry_ms
    body = encode(event="shutdown", data=json.dumps({"reason": "server shutting down", "retry_ms": retry}))
    return (encode_retry(retry) if retry is not None else b"") + body


def _reset(reason: str, last_event_id: str) -> bytes:
    return encode(event="reset", data=json.dumps({"reason": reason, "last_event_id": last_event_id}))


def _snapshot(client: Client, broker: Broker, options: StreamOptions) -> bytes:
    last = broker.last_key
    jobs = options.snapshot(client) if options.snapshot is not None else {"jobs": []}
    return encode(event="snapshot", id=format_id(last) if last else None, data=json.dumps(jobs, separators=(",", ":")))
