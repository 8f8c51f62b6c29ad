"""A TCP relay that holds every chunk for a delay, each way: latency where the kernel has no netem."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class DelayProxy:
    """A TCP relay adding ``delay`` seconds each way; ``cut_all`` resets every connection.

    Threads only (two per direction per connection): the tests run a few
    streams through it, not thousands.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.server = socket.create_server(listen)
        self.address: tuple[str, int] = self.server.getsockname()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="delay-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                down.close()
                continue
            for sock in (down, up):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self._lock:
                self._conns += [down, up]
            self._pipe(down, up)
            self._pipe(up, down)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """src -> (held for delay) -> dst, order kept."""
        due: list[tuple[float, bytes]] = []
        ready = threading.Condition()

        def read() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                with ready:
                    due.append((time.monotonic() + self.delay, data))
                    ready.notify()
                if not data:
                    return

        def write() -> None:
            while True:
                with ready:
                    ready.wait_for(lambda: bool(due))
                    at, data = due.pop(0)
                time.sleep(max(0.0, at - time.monotonic()))
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def cut_all(self) -> int:
        """Reset every relayed connection (both sides); returns how many there were."""
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(conns) // 2

    def close(self) -> None:
        self._closed = True
        self.server.close()
        self.cut_all()
