"""A deploy by SIGHUP keeps the instance's stream limit across old and new workers.

gunicorn re-reads gunicorn.conf.py on SIGHUP (fresh module globals), starts
new workers and only then stops the old ones, which drain their streams over
``STREAM_DRAIN_SECONDS``. While both generations run, every stream of the
instance must count against one ``STREAM_MAX_CONNECTIONS``: a new worker must
not admit streams as if the old workers' still-open streams were gone.
Real gunicorn with two workers, real Redis.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import StartServer
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

LIMIT = 4
HELD: list[SSEClient] = []  # streams a test opened through open_or_refused, closed at its end


def worker_pids(server: ServerProcess) -> set[int]:
    """The pids that answered /health in a few tries (one connection each)."""
    seen: set[int] = set()
    for _ in range(20):
        server.close_http()  # a new connection: the kernel picks a worker
        seen.add(server.health()["pid"])
    return seen


def open_or_refused(server: ServerProcess, deadline: float) -> bool:
    """A new stream: ``True`` admitted, ``False`` refused at capacity; a stream
    that met an old worker still draining (its one-frame shutdown answer) is retried."""
    while time.monotonic() < deadline:
        stream = SSEClient(server.port, params=[("topic", "reload")], timeout=5).open()
        if stream.status == 503:
            stream.close()
            return False
        assert stream.status == 200
        stream.wait(lambda c: c.comments or c.events)
        if any(c.startswith("connected") for c in stream.comments):
            HELD.append(stream)
            return True
        stream.close()  # `event: shutdown` from a draining old worker
    raise AssertionError("no answer from a new worker in time")


@pytest.mark.timeout(90)
def test_old_and_new_workers_share_one_limit_during_a_reload(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    server = start_server(
        {
            "WEB_CONCURRENCY": "2",
            "REDIS_URL": redis_server.url,
            "STREAM_MAX_CONNECTIONS": str(LIMIT),
            # Long enough that the old workers keep all but their first stream
            # open for the whole test (each closes one at once, then one per 30 s).
            "STREAM_DRAIN_SECONDS": "120",
        }
    )
    old = [SSEClient(server.port, params=[("topic", "reload")], timeout=5).open() for _ in range(LIMIT)]
    try:
        assert all(s.status == 200 for s in old)
        server.wait_for(lambda: server.health()["stream"]["active_connections"] == LIMIT)
        old_pids = worker_pids(server)
        server.send_signal(signal.SIGHUP)
        # New workers are up when /health answers from a pid not seen before.
        server.wait_for(lambda: worker_pids(server) - old_pids, timeout=30, interval=0.2)
        for stream in old:
            stream.pump(timeout=0.2)  # a farewell, if this one got it
        still_open = sum(1 for s in old if not s.eof and not any(e.event == "shutdown" for e in s.events))
        assert still_open >= LIMIT - 2  # at most one farewell per old worker so far
        deadline = time.monotonic() + 30
        admitted = 0
        while open_or_refused(server, deadline):
            admitted += 1
            assert admitted <= LIMIT, "unbounded admissions"
        # Every slot the old streams still hold stays taken.
        assert admitted <= LIMIT - still_open, (admitted, still_open)
    finally:
        for stream in old + HELD:
            stream.close()
        HELD.clear()
        server.kill()  # the old workers would drain for STREAM_DRAIN_SECONDS, past any quick stop
