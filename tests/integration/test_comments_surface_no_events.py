"""httpx-sse against real gunicorn: the opening comment and keep-alives surface no event.

httpx-sse dispatches an event at every blank line once it has seen an id or
a ``retry:``; a comment followed by a blank line was an empty ``message``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from tests.conftest import StartServer

pytestmark = pytest.mark.integration


class Tap(httpx.SyncByteStream):
    """The response body as httpx-sse reads it, with a copy of every byte."""

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self.stream = stream
        self.raw = b""

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            self.raw += chunk
            yield chunk

    def close(self) -> None:
        self.stream.close()


@pytest.mark.timeout(30)
def test_httpx_sse_sees_only_published_events_through_opening_and_keepalives(start_server: StartServer) -> None:
    server = start_server({"STREAM_KEEPALIVE_INTERVAL": "0.2", "STREAM_CLEANUP_INTERVAL": "0.2"})
    surfaced: list[ServerSentEvent] = []
    done = threading.Event()
    tap: Tap | None = None
    opened = threading.Event()

    def read() -> None:
        nonlocal tap
        with (
            httpx.Client(base_url=server.url(), timeout=10) as http,
            connect_sse(http, "GET", "/stream", params={"topic": "plain"}) as source,
        ):
            tap = Tap(source.response.stream)  # type: ignore[arg-type]
            source.response.stream = tap
            opened.set()
            for sse in source.iter_sse():
                surfaced.append(sse)
                if sse.event == "last":
                    break
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(10)
    server.wait_for(lambda: tap is not None and b": connected c" in tap.raw, timeout=10)
    first = server.publish("plain", "one", event="first")
    assert tap is not None
    seen = tap.raw.count(b": keepalive\n")
    server.wait_for(lambda: tap is not None and tap.raw.count(b": keepalive\n") >= seen + 2, timeout=10)
    last = server.publish("plain", "two", event="last")
    assert done.wait(10), f"httpx-sse surfaced {surfaced!r}"
    reader.join(5)

    assert [(e.event, e.data, e.id) for e in surfaced] == [("first", "one", first), ("last", "two", last)]
    assert tap.raw.startswith(b"retry: 3000\n: connected c")
    assert b"\n\n: keepalive" in tap.raw  # keep-alives came after an event with an id
