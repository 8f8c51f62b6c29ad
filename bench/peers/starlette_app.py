"""Minimal sse-starlette peer with Jobstream's contract, for side-by-side runs.

POST /events {"topic", "event", "data"} -> 202 {"id"}; GET /stream?topic=t
(repeatable, ``X*`` prefix match); GET /health. Each subscriber has a bounded
queue; a subscriber whose queue overflows is ended and may reconnect with
Last-Event-ID to replay from a small ring buffer, like Jobstream.
Run: uvicorn bench.peers.starlette_app:app --port N
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

QUEUE_MAX = 1024
REPLAY_MAX = 10_000

Event = tuple[str, str, str, str]  # id, topic, event, data


class Hub:
    """Fan-out of published events to per-subscriber queues."""

    def __init__(self) -> None:
        self.subs: dict[asyncio.Queue[Event | None], list[str]] = {}
        self.replay: deque[Event] = deque(maxlen=REPLAY_MAX)
        self.seq = itertools.count()

    @staticmethod
    def matches(topics: list[str], topic: str) -> bool:
        if not topics:
            return True
        return any(topic.startswith(t[:-1]) if t.endswith("*") else topic == t for t in topics)

    def publish(self, topic: str, event: str, data: str) -> str:
        ev: Event = (f"{int(time.time() * 1000)}-{next(self.seq)}", topic, event, data)
        self.replay.append(ev)
        for q, topics in list(self.subs.items()):
            if not self.matches(topics, topic):
                continue
            if q.full():  # too slow: end its stream, it may come back
                del self.subs[q]
                q.get_nowait()
                q.put_nowait(None)
            else:
                q.put_nowait(ev)
        return ev[0]

    def missed(self, last_id: str, topics: list[str]) -> list[Event]:
        ids = [e[0] for e in self.replay]
        if last_id not in ids:
            return []
        start = ids.index(last_id) + 1
        return [e for e in list(self.replay)[start:] if self.matches(topics, e[1])]


hub = Hub()


async def publish(request: Request) -> Response:
    body = await request.json()
    data = body.get("data")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    ev_id = hub.publish(str(body["topic"]), str(body.get("event", "message")), text)
    return JSONResponse({"id": ev_id}, status_code=202)


async def stream(request: Request) -> Response:
    topics = request.query_params.getlist("topic")
    q: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=QUEUE_MAX)
    backlog = hub.missed(request.headers.get("last-event-id", ""), topics)
    hub.subs[q] = topics

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            for ev in backlog:
                yield ServerSentEvent(id=ev[0], event=ev[2], data=ev[3])
            while True:
                item = await q.get()
                if item is None:
                    return
                yield ServerSentEvent(id=item[0], event=item[2], data=item[3])
        finally:
            hub.subs.pop(q, None)

    return EventSourceResponse(events(), ping=15)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "healthy", "stream": {"active_connections": len(hub.subs)}})


app = Starlette(
    routes=[
        Route("/events", publish, methods=["POST"]),
        Route("/stream", stream),
        Route("/health", health),
    ]
)
