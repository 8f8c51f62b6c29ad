"""The clients of the fault scenarios: an EventSource-like reader, a publisher, /health.

A reader reconnects with Last-Event-ID and keeps every id it got; the
publisher keeps every id a 202 acknowledged; tests/support/fault_tally.py
compares the two.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from tests.support.faults import Netns
from tests.support.sse import SSEClient


@dataclass
class RemoteSSEClient(SSEClient):
    """SSEClient to any host, optionally from inside a namespace."""

    host: str = "127.0.0.1"
    netns: Netns | None = None

    def connect(self, recv_buffer: int | None = None) -> SSEClient:
        if self.netns is not None:
            with self.netns.entered():
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
            query = "&".join(f"{k}={v}" for k, v in self.params)
            lines = [f"GET {self.path}?{query} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: text/event-stream"]
            lines += [f"{k}: {v}" for k, v in self.headers.items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError:
            sock.close()
            raise
        self.sock = sock
        return self


class ResumingReader(threading.Thread):
    """An EventSource in a thread: reads one stream, reconnects with Last-Event-ID.

    ``ids`` is every id received for ``event``, in arrival order, repeats
    included; ``arrived[id]`` when it first came. Reconnects after
    ``retry_delay`` (a browser would honour the server's ``retry:``; the
    tests keep the wait short and fixed). With ``silence``, a stream that
    brings no byte for that long (no event, no keep-alive) counts as dead and
    is reopened, as a client with a heartbeat timeout does: over a lossy link
    the reset that ends a connection can itself be lost, and a reader that
    never writes would otherwise wait on it forever.
    """

    def __init__(
        self,
        make: Callable[[dict[str, str]], SSEClient],
        event: str,
        retry_delay: float = 0.1,
        silence: float | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.make = make
        self.event = event
        self.retry_delay = retry_delay
        self.silence = silence
        self.ids: list[str] = []
        self.arrived: dict[str, float] = {}
        self.last_id: str | None = None
        self.connects = 0
        self.failed_connects = 0
        self.silent_reopens = 0
        self.resets = 0
        self.statuses: list[int] = []
        self._halt = threading.Event()
        self._client: SSEClient | None = None

    def run(self) -> None:
        while not self._halt.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            client = self.make(headers)
            try:
                client.open()
            except (OSError, ConnectionError, ValueError):
                client.close()
                self.failed_connects += 1
                self._halt.wait(self.retry_delay)
                continue
            self.statuses.append(client.status)
            if client.status != 200:
                client.close()
                self._halt.wait(self.retry_delay)
                continue
            self.connects += 1
            self._client = client
            seen = 0
            heard, heard_at = len(client.raw), time.monotonic()
            try:
                while not self._halt.is_set():
                    alive = client.pump(0.2)
                    for event in client.events[seen:]:
                        self._take(event.event, event.id)
                    seen = len(client.events)
                    if not alive:
                        break
                    if len(client.raw) != heard:
                        heard, heard_at = len(client.raw), time.monotonic()
                    elif self.silence is not None and time.monotonic() - heard_at > self.silence:
                        self.silent_reopens += 1
                        break
            except (OSError, ValueError):
                pass  # reset, or cut mid-chunk: reconnect
            finally:
                client.close()
                self._client = None
            self._halt.wait(self.retry_delay)

    def _take(self, name: str, event_id: str | None) -> None:
        if name == "reset":
            self.resets += 1
        if event_id is not None:
            self.last_id = event_id
        if name == self.event and event_id is not None:
            self.ids.append(event_id)
            self.arrived.setdefault(event_id, time.monotonic())

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(5)


class Publisher(threading.Thread):
    """POSTs ``event`` on ``topic`` at ``rate`` a second; keeps every acknowledged id.

    ``acked`` maps id -> when the 202 came; anything else (a 503, a reset, a
    timeout) is counted in ``refused`` by status (0: no answer).
    """

    def __init__(self, base_url: str, topic: str, event: str, rate: float, timeout: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.topic = topic
        self.event = event
        self.rate = rate
        self.timeout = timeout
        self.acked: dict[str, float] = {}
        self.refused: dict[int, int] = {}
        self.attempts = 0
        self._halt = threading.Event()

    def run(self) -> None:
        http = httpx.Client(base_url=self.base_url, timeout=self.timeout)
        start = time.monotonic()
        try:
            while not self._halt.is_set():
                self.attempts += 1
                body = {"topic": self.topic, "event": self.event, "data": {"n": self.attempts}}
                try:
                    response = http.post("/events", json=body)
                    if response.status_code == 202:
                        self.acked[response.json()["id"]] = time.monotonic()
                    else:
                        self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1
                except httpx.HTTPError:
                    self.refused[0] = self.refused.get(0, 0) + 1
                    http.close()
                    http = httpx.Client(base_url=self.base_url, timeout=self.timeout)
                self._halt.wait(max(0.0, start + self.attempts / self.rate - time.monotonic()))
        finally:
            http.close()

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(self.timeout + 5)

    def acked_after(self, moment: float) -> list[str]:
        return [i for i, at in self.acked.items() if at >= moment]


def health(base_url: str) -> tuple[int, str]:
    """(status, broker) from /health on a new connection, so any worker may answer."""
    try:
        response = httpx.get(base_url + "/health", timeout=3)
    except httpx.HTTPError:
        return 0, ""
    return response.status_code, response.json().get("broker", "")


def readers_of(
    port: int, topic: str, count: int, silence: float | None = None, **client: object
) -> list[ResumingReader]:
    """count readers of ``topic`` on port (``client``: RemoteSSEClient's host, netns, ...)."""

    def make(headers: dict[str, str]) -> SSEClient:
        return RemoteSSEClient(port, params=[("topic", topic)], headers=headers, timeout=5, **client)  # type: ignore[arg-type]

    return [ResumingReader(make, "tick", silence=silence) for _ in range(count)]


@contextlib.contextmanager
def running(publisher: Publisher, readers: list[ResumingReader]) -> Iterator[None]:
    """The readers start now (the publisher when the test says); all are stopped on exit."""
    for reader in readers:
        reader.start()
    try:
        yield
    finally:
        publisher.stop()
        for reader in readers:
            reader.stop()
