"""A WebSocket client on a raw socket (wsproto from PyPI) that does only what a test tells it:
it answers no ping, reads only when asked, and can send a message in fragments."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Request, TextMessage


class RawWebSocket:
    def __init__(self, port: int, receive_buffer: int | None = None, timeout: float = 10) -> None:
        self.sock = socket.socket()
        if receive_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target="/ws")))
        while not any(isinstance(e, AcceptConnection) for e in self.events()):
            pass

    def send(self, message: dict[str, Any] | str, fragments: int = 1) -> None:
        """One text message, split into ``fragments`` frames."""
        text = message if isinstance(message, str) else json.dumps(message)
        step = -(-len(text) // fragments)
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
        for n, piece in enumerate(pieces):
            self.sock.sendall(self.ws.send(TextMessage(piece, message_finished=n == len(pieces) - 1)))

    def events(self) -> list[Event]:
        """What the next read brings (``[]``-free: at least one read)."""
        self.ws.receive_data(self.sock.recv(65536) or None)
        return list(self.ws.events())

    def until(self, kind: type[Event], timeout: float = 10) -> tuple[Event, list[Event]]:
        """Read until an event of ``kind``; it and everything before it."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                seen.append(event)
                if isinstance(event, kind):
                    return event, seen
        raise AssertionError(f"no {kind.__name__} within {timeout} s: {seen}")

    def close_frame(self, timeout: float = 10) -> CloseConnection:
        event, _ = self.until(CloseConnection, timeout)
        assert isinstance(event, CloseConnection)
        return event

    def close(self) -> None:
        self.sock.close()
