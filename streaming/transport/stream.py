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
import math
import queue
import socket
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from streaming.core.broker import Broker, BrokerUnavailable
from streaming.core.client import Client
from streaming.core.events import encode, encode_comment, encode_retry
from streaming.core.history import ReplayGap
from streaming.core.ids import Key, format_id, parse_id
from streaming.core.reasons import NOT_KEEPING_UP, CloseReason
from streaming.core.registry import Registry
from streaming.core.writer import KEEPALIVE as KEEPALIVE_TICK
from streaming.core.writer import WAKE

# Comments end with their own line break and nothing more: a blank line
# after one dispatches nothing in a browser, but clients that keep the last
# id or retry across events (httpx-sse, fetch-event-source) surface it as an
# empty ``message``.
KEEPALIVE = encode_comment("keepalive")
SHUTTING_DOWN = "server shutting down"
# A full queue is drained into one write; more would only delay the first.
MAX_BATCH = 256
MAX_WRITE_BYTES = 64 * 1024

Snapshot = Callable[[Client], Any]

# What gunicorn still reads from a request's environ once the app returned:
# ``wsgi.file_wrapper`` at once, and, only when its access log is on
# (``gunicorn.access`` is at WARNING: ``server/logs.py``), the request line
# (read without a default) and the peer. Five keys: a dict of up to five is
# 184 bytes, of six to ten 272; the other access-log fields are then empty or "-".
ENVIRON_KEPT = ("wsgi.file_wrapper", "REQUEST_METHOD", "RAW_URI", "SERVER_PROTOCOL", "REMOTE_ADDR")


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
    reason = CloseReason.CLIENT
    writer = client.writer
    try:
        opening, heal_from, sent = _opening(client, broker, options, last_event_id, start_key)
        for piece in _pieces(opening):
            yield piece
            writer.last_write = options.clock()
        writer.events_sent += sent
        # Parked streams are most of what a worker holds: nothing written
        # stays referenced from this frame while it waits (no bound methods
        # either: 64 bytes each, per stream).
        del opening
        piece = b""  # the empty bytes object is shared
        buffer = writer.queue
        while client.closing is None:
            # Parked: until something is queued the fan-out writes events for
            # this stream itself (no wake-up; streaming/core/writer.py).
            writer.park()
            # No timeout: the cleanup daemon's keep-alive tick (or an event,
            # a shutdown, an eviction, a hang-up) is what wakes us.
            first = buffer.get()
            writer.parked = False
            if writer.pending is not None:
                writer.flush_pending(options.clock())
            if first is KEEPALIVE_TICK and buffer.empty():
                yield KEEPALIVE
                writer.last_write = options.clock()
                continue
            batch, first = [first], None
            try:
                while len(batch) < MAX_BATCH:
                    batch.append(buffer.get_nowait())
            except queue.Empty:
                pass
            chunks, count = _chunks(client, batch, broker, options, heal_from)
            del batch
            if len(chunks) == 1:  # the common case: one event per wake-up
                yield chunks[0]
                writer.last_write = options.clock()
            else:
                for piece in _pieces(chunks):
                    yield piece
                    writer.last_write = options.clock()
                piece = b""
            del chunks
            writer.events_sent += count
        reason = client.closing
        if reason is CloseReason.SHUTDOWN:
            retry = client.close_retry_ms
            yield shutdown_frame(options.retry_ms if retry is None else retry, len(registry), registry.max_connections)
        elif reason is CloseReason.TOKEN_EXPIRED and client.grant is not None:
            yield token_expired_frame(options.retry_ms, client.grant.exp)
    except BrokerUnavailable:
        # Replay or the snapshot needs Redis, which is down. End politely: the
        # browser retries later with the same Last-Event-ID and loses nothing
        # (a reset here would throw its position away).
        reason = CloseReason.UNAVAILABLE
        yield encode_retry(options.retry_ms) + encode_comment("broker unavailable, retry later")
    except GeneratorExit:
        reason = client.closing or CloseReason.CLIENT
        raise
    finally:
        client.stop_watching()
        registry.remove(client, reason)
        if reason is not CloseReason.CLIENT and reason not in NOT_KEEPING_UP:
            # The server ended this stream: refuse a follow-up request on the
            # same connection so the client sees EOF right after the last chunk.
            writer.shut_down(socket.SHUT_RD)


def shed_environ(environ: dict[str, Any]) -> None:
    """Empty an admitted stream's environ down to ``ENVIRON_KEPT``.

    gunicorn's handler holds the dict (and through it the headers as strings,
    the early-hints closure, the input wrapper) for the whole life of the
    stream, though nothing reads it after the stream began: about 1,700 B of
    each parked stream (docs/benchmarks.md, run V). Only where no Flask
    request context reads it afterwards (the fast path).
    """
    kept = {key: environ[key] for key in ENVIRON_KEPT if key in environ}
    environ.clear()
    environ.update(kept)


def _opening(
    client: Client, broker: Broker, options: StreamOptions, last_event_id: str | None, start_key: Key | None
) -> tuple[list[bytes], Key | None, int]:
    """The first write: ``retry:``, the comment, then a replay or a reset and a
    snapshot. Also where a gap is healed from while nothing was sent yet, and
    how many events the replay holds."""
    writer = client.writer
    opening = [encode_retry(options.retry_ms), encode_comment(f"connected {client.id}")]
    # writer.last_key: the newest id written (here or by a direct write);
    # anything at or below it arriving later is a duplicate and skipped.
    heal_from = start_key
    if last_event_id:
        key = parse_id(last_event_id)
        try:
            if key is None:
                raise ReplayGap("malformed")
            replayed = broker.replay(key, client.topics, client.may_read)
            writer.last_key = replayed[-1].key if replayed else key
            opening.extend(e.wire for e in replayed)
            _notify(options.on_replay, "reconnect")
            return opening, heal_from, len(replayed)
        except ReplayGap as gap:
            _notify(options.on_reset, gap.reason)
            opening.append(_reset(gap.reason, last_event_id))
            heal_from = broker.last_key  # before the snapshot is read, as below
            opening.append(_snapshot(client, broker, options))
            return opening, heal_from, 0
    if options.wants_snapshot:
        heal_from = broker.last_key
        opening.append(_snapshot(client, broker, options))
    return opening, heal_from, 0


def _chunks(
    client: Client, batch: list[Any], broker: Broker, options: StreamOptions, heal_from: Key | None
) -> tuple[list[bytes], int]:
    """What one wake-up writes: a healed gap first, then the batch's events not
    yet sent (markers and duplicates dropped); and how many events that is."""
    writer = client.writer
    chunks: list[bytes] = []
    if writer.gap:
        # The fan-out dropped events while the buffer was full. They are in
        # history (appended before fan-out), so replay them now instead of
        # leaving a hole. Checked after taking the batch so nothing in the
        # batch is newer than what the replay returns.
        writer.gap = False
        base = writer.last_key or heal_from
        try:
            if base is None:
                raise ReplayGap("overflow")
            batch = [*broker.replay(base, client.topics, client.may_read), *batch]
            _notify(options.on_replay, "overflow")
        except ReplayGap:
            _notify(options.on_reset, "overflow")
            chunks.append(_reset("overflow", format_id(base) if base else ""))
            chunks.append(_snapshot(client, broker, options))
    count = 0
    last = writer.last_key
    for item in batch:
        if item is WAKE or item is KEEPALIVE_TICK or (last is not None and item.key <= last):
            continue
        chunks.append(item.wire)
        last = item.key
        count += 1
    writer.last_key = last
    return chunks, count


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


def retry_after_seconds(retry_ms: int) -> int:
    """A reconnect delay as ``Retry-After`` (and ``retry_after``): whole seconds, at least one."""
    return max(1, math.ceil(retry_ms / 1000))


def shutdown_frame(retry_ms: int, active_connections: int, max_connections: int) -> bytes:
    """``retry:`` and ``event: shutdown``: the last frame of a stream ended by a
    shutdown, and the whole answer to a stream opened while draining.

    One shape for both, so a client handles a restart one way whichever it
    met: ``reason`` and ``retry_ms`` (when to come back), ``error`` and
    ``retry_after`` (seconds, as in ``Retry-After``) like the other refusals,
    and this worker's open and maximum streams.
    """
    data = {
        "reason": SHUTTING_DOWN,
        "retry_ms": retry_ms,
        "error": SHUTTING_DOWN,
        "retry_after": retry_after_seconds(retry_ms),
        "active_connections": active_connections,
        "max_connections": max_connections,
    }
    return encode_retry(retry_ms) + encode(event="shutdown", data=json.dumps(data))


def token_expired_frame(retry_ms: int, exp: float) -> bytes:
    """``retry:`` and ``event: token-expired``: the last frame of a stream whose
    token reached its ``exp``. The browser reconnects after ``retry:`` with
    whatever cookie the web app set meanwhile, and resumes by Last-Event-ID."""
    data = {"reason": "token expired", "exp": int(exp)}
    return encode_retry(retry_ms) + encode(event="token-expired", data=json.dumps(data))


def _reset(reason: str, last_event_id: str) -> bytes:
    return encode(event="reset", data=json.dumps({"reason": reason, "last_event_id": last_event_id}))


def _snapshot(client: Client, broker: Broker, options: StreamOptions) -> bytes:
    last = broker.last_key
    jobs = options.snapshot(client) if options.snapshot is not None else {"jobs": []}
    return encode(event="snapshot", id=format_id(last) if last else None, data=json.dumps(jobs, separators=(",", ":")))
