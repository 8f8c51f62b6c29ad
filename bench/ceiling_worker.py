"""gevent's own ceiling: what a connect costs with no HTTP and no app at all.

``gunicorn -k bench.ceiling_worker.CeilingWorker`` (``bench.servers.floor``
with ``ceiling=True``): gunicorn's gevent worker whose ``handle`` reads one
``recv``, answers ``/health``, and for every other request sends a fixed
event-stream head and comment in one ``send`` and parks the greenlet on one
shared ``Event``. What is left per connect is gevent's accept, socket object,
pool greenlet and switch, and the kernel: the most a gevent server can do,
which Jobstream's front door (``server.front``) is measured against.

gunicorn imports this module in its master before gevent patches anything:
nothing but gunicorn's own worker is imported here at import time.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.ggevent import GeventWorker

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
COMMENT = b": connected\n\n"
FIRST = HEAD + b"%X\r\n%s\r\n" % (len(COMMENT), COMMENT)
HEALTH = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


class CeilingWorker(GeventWorker):  # type: ignore[misc]
    forever: Any = None  # one gevent Event every stream waits on, made in the worker

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if self.forever is None:
            import gevent.event

            CeilingWorker.forever = gevent.event.Event()
        with client:
            if b" /health" in client.recv(8192):
                client.sendall(HEALTH)
                return
            client.sendall(FIRST)
            self.forever.wait()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Never called (``handle`` answers everything); gunicorn needs an app to load."""
    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
