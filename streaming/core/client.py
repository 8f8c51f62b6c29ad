"""One open stream: who it is, what it wants, and why it must end."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streaming.core.buffer import new_buffer
from streaming.core.reasons import NOT_KEEPING_UP, CloseReason
from streaming.core.topics import TopicFilter
from streaming.core.writer import WAKE, StreamWriter

if TYPE_CHECKING:
    from server.tokens import Grant
    from streaming.core.events import Event

_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Client:
    """One open stream (SSE today). ``writer`` holds its buffer and socket."""

    writer: StreamWriter
    remote_addr: str
    user_agent: str
    topics: TopicFilter = field(default_factory=TopicFilter)
    id: str = field(default_factory=lambda: f"c{next(_ids)}")
    connected_at: float = field(default_factory=time.time)
    connected_mono: float = field(default_factory=time.monotonic)
    # Why the stream must end; the first reason wins.
    closing: CloseReason | None = None
    close_retry_ms: int | None = None
    # Stops the hang-up watch (streaming.transport.hangup) when the stream ends.
    unwatch: Callable[[], None] | None = None
    # Who the reader is and what its token lets it read (``server.tokens``);
    # None for an anonymous stream, ``server.tokens.OPERATOR`` for API_TOKEN.
    # The stream ends at ``grant.exp``.
    grant: Grant | None = None
    # "sse" (GET /stream) or "ws" (GET /ws, streaming.transport.websocket).
    transport: str = "sse"

    @classmethod
    def create(
        cls,
        buffer_size: int,
        remote_addr: str,
        user_agent: str,
        topics: TopicFilter,
        sock: Any = None,
        grant: Grant | None = None,
    ) -> Client:
        writer = StreamWriter(new_buffer(buffer_size), sock)
        return cls(writer, remote_addr, user_agent, topics, grant=grant)

    def may_read(self, event: Event) -> bool:
        """Whether this stream may get ``event``, its topic filter aside.

        The one visibility rule, for the fan-out, replay and heals alike: a
        public event, anyone; an owned one (a job's), its owner; any other
        private one, a grant whose ``subscribe`` patterns match its topic;
        every private event, an admin grant or the operator (``OPERATOR`` is
        an admin grant). Anonymous streams never get a private event.
        """
        if not event.private:
            return True
        grant = self.grant
        if grant is None:
            return False
        if grant.admin:
            return True
        owner = event.owner
        return grant.sub == owner if owner is not None else grant.may_subscribe(event.topic)

    def stop_watching(self) -> None:
        """End the hang-up watch (idempotent). The watch refers back to the
        client; dropping it here lets a closed stream's memory go at once
        instead of at the next full garbage collection."""
        unwatch, self.unwatch = self.unwatch, None
        if unwatch is not None:
            unwatch()

    def close(self, reason: CloseReason, retry_ms: int | None = None) -> None:
        """Ask the stream to end; its generator writes the last frame."""
        if self.closing is not None:
            return
        self.close_retry_ms = retry_ms
        self.closing = reason
        writer = self.writer
        writer.nudge(WAKE)  # a full queue: it sees ``closing`` after its write
        if reason in NOT_KEEPING_UP:
            writer.shut_down(socket.SHUT_RDWR)

    def info(self, now_mono: float) -> dict[str, Any]:
        writer = self.writer
        return {
            "id": self.id,
            "ip": self.remote_addr,
            "user_agent": self.user_agent,
            "connected_at": self.connected_at,
            "topics": list(self.topics.patterns),
            "sub": (self.grant.sub or None) if self.grant is not None else None,  # OPERATOR's is ""
            "transport": self.transport,
            "qos": "background" if writer.spacing is not None else "foreground",
            "events_sent": writer.events_sent,
            "queue_depth": writer.queue.qsize(),
            "lag_seconds": round(max(0.0, now_mono - writer.last_write), 3),
        }
