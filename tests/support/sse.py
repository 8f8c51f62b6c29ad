"""A raw-socket SSE client, independent of the server's code.

It speaks HTTP/1.1 by hand so tests can see exact bytes, stop reading on
purpose (slow clients), or vanish without a FIN. Parsing follows the WHATWG
event-stream rules: lines end in CRLF, LF or CR; ``data`` lines join with LF.
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

_BREAK = re.compile(rb"\r\n|\r|\n")


@dataclass
class SSEEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class SSEClient:
    port: int
    path: str = "/stream"
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self.sock: socket.socket | None = None
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.raw = bytearray()  # de-chunked body bytes received so far
        self._buffer = b""  # undecoded socket bytes
        self._chunked = False
        self._chunk_left = 0
        self._eof = False
        self._parsed = 0
        self._line_buf = b""
        self._pending = SSEEvent()
        self._pending_data: list[str] = []
        self._has_data = False
        self.events: list[SSEEvent] = []
        self.comments: list[str] = []
        self.last_id: str | None = None
        self._id_buffer: str | None = None
        self.retry: int | None = None

    # -- connection ----------------------------------------------------------

    def connect(self, recv_buffer: int | None = None) -> SSEClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if recv_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.settimeout(self.timeout)
        sock.connect(("127.0.0.1", self.port))
        query = f"?{urlencode(self.params)}" if self.params else ""
        lines = [f"GET {self.path}{query} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.sock = sock
        return self

    def read_headers(self) -> SSEClient:
        while b"\r\n\r\n" not in self._buffer:
            self._recv()
            if self._eof:
                raise ConnectionError(f"closed before headers: {self._buffer!r}")
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.response_headers[name.strip().lower()] = value.strip()
        self._chunked = self.response_headers.get("transfer-encoding", "").lower() == "chunked"
        self._buffer = rest
        self._decode()
        self._parse()
        return self

    def open(self) -> SSEClient:
        return self.connect().read_headers()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def abort(self) -> None:
        """Close with RST instead of FIN, like a crashed browser tab."""
        if self.sock is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close()

    def __enter__(self) -> SSEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------

    def _recv(self, deadline: float | None = None) -> None:
        assert self.sock is not None
        if deadline is not None:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self._eof = True
        self._buffer += data

    def _decode(self) -> None:
        if not self.status:
            return
        if not self._chunked:
            self.raw += self._buffer
            self._buffer = b""
            length = self.response_headers.get("content-length")
            if length is not None and len(self.raw) >= int(length):
                self._eof = True
            return
        while True:
            if self._chunk_left == 0:
                line, sep, rest = self._buffer.partition(b"\r\n")
                if not sep:
                    return
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self._eof = True  # terminating chunk
                    self._buffer = b""
                    return
                self._chunk_left = size + 2
                self._buffer = rest
            take = min(self._chunk_left, len(self._buffer))
            if not take:
                return
            piece, self._buffer = self._buffer[:take], self._buffer[take:]
            self._chunk_left -= take
            if self._chunk_left < 2:  # part of the chunk's trailing CRLF was read
                piece = piece[: len(piece) - (2 - self._chunk_left)]
            self.raw += piece

    def _parse(self) -> None:
        data = self._line_buf + bytes(self.raw[self._parsed :])
        self._parsed = len(self.raw)
        pos = 0
        for match in _BREAK.finditer(data):
            if match.group() == b"\r" and match.end() == len(data):
                break  # a CR at the end may be half of a CRLF: wait for more bytes
            self._line(data[pos : match.start()].decode("utf-8"))
            pos = match.end()
        self._line_buf = data[pos:]

    def _line(self, line: str) -> None:
        if line == "":
            self.last_id = self._id_buffer
            if self._has_data:
                self._pending.data = "\n".join(self._pending_data)
                self._pending.id = self.last_id
                self.events.append(self._pending)
            self._pending = SSEEvent()
            self._pending_data = []
            self._has_data = False
            return
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._pending_data.append(value)
            self._has_data = True
        elif name == "event":
            self._pending.event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value  # becomes last_id only when the event completes
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
            self._pending.retry = int(value)

    def pump(self, timeout: float = 0.5) -> bool:
        """Read once; returns False at EOF."""
        if self._eof:
            return False
        try:
            self._recv(time.monotonic() + timeout)
        except TimeoutError:
            return True
        self._decode()
        self._parse()
        return not self._eof

    def wait(self, predicate: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate(self)
            if result:
                return result
            if self._eof:
                raise AssertionError(f"stream ended before condition; events={[e.event for e in self.events]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met within {timeout}s; events={[e.event for e in self.events][-10:]}"
                )
            try:
                self.pump(min(0.5, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                pass

    def wait_events(self, count: int, timeout: float = 10.0, event: str | None = None) -> list[SSEEvent]:
        def enough(c: SSEClient) -> list[SSEEvent] | None:
            chosen = [e for e in c.events if event is None or e.event == event]
            return chosen if len(chosen) >= count else None

        return self.wait(enough, timeout)  # type: ignore[no-any-return]

    def wait_eof(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._eof:
            if time.monotonic() > deadline:
                raise AssertionError(f"no EOF within {timeout}s")
            try:
                self.pump(min(0.5, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                pass

    @property
    def eof(self) -> bool:
        return self._eof

    def of(self, event: str) -> list[SSEEvent]:
        return [e for e in self.events if e.event == event]


def http_request(port: int, raw: bytes, timeout: float = 5.0) -> Response:
    """Send raw request bytes; read one response (by Content-Length, or to EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if match and len(body) >= int(match.group(1)):
                    break
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                if not data:
                    raise
                break  # the server answered, then reset over an unread body
            if not piece:
                break
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Response(int(status_line.split()[1]), headers, body)


def pump_all(clients: list[SSEClient], done: Any, timeout: float = 10.0) -> None:
    """Read many streams at once until ``done(client)`` holds for each (or EOF)."""
    waiting = {c.sock: c for c in clients if c.sock is not None and not done(c) and not c.eof}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in waiting:
            selector.register(sock, selectors.EVENT_READ)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(waiting)} of {len(clients)} streams not done within {timeout}s")
            for key, _ in selector.select(min(left, 0.5)):
                client = waiting[key.fileobj]  # type: ignore[index]
                client.pump(0.01)
                if done(client) or client.eof:
                    selector.unregister(key.fileobj)
                    del waiting[key.fileobj]  # type: ignore[arg-type]
