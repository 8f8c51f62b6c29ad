"""A worker killed with SIGKILL under load: its streams resume on a live worker, nothing acknowledged is lost.

Two gunicorn workers on one Redis (loopback); eight streams, a publisher at
40 events/s. The worker holding the most streams gets ``kill -9``: its
streams see a reset and reconnect with ``Last-Event-ID`` to whichever worker
accepts (the other one, or the one gunicorn starts in its place), which
replays from Redis. No network fault is needed, so this scenario never skips
for lack of namespaces.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.conftest import StartServer
from tests.support.fault_clients import Publisher, readers_of, running
from tests.support.fault_tally import record, tally, wait_delivered
from tests.support.redis import RedisServer

TOPIC = "faults/kill"
STREAMS = 8


@pytest.mark.timeout(60)
def test_kill_9_of_a_worker_loses_nothing_acknowledged(redis_server: RedisServer, start_server: StartServer) -> None:
    server = start_server({"REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "2", "STREAM_KEEPALIVE_INTERVAL": "1"})

    readers = readers_of(server.port, TOPIC, STREAMS)
    publisher = Publisher(server.url(), TOPIC, "tick", rate=40)
    with running(publisher, readers):
        server.wait_for(lambda: all(r.connects for r in readers), timeout=10)
        publisher.start()
        server.wait_for(lambda: len(publisher.acked) >= 40, timeout=10)
        by_pid = Counter(r["pid"] for r in server.log_records() if r.get("event") == "stream_opened")
        victim, on_victim = by_pid.most_common(1)[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        server.wait_for(lambda: len(publisher.acked_after(killed_at)) >= 80, timeout=15)
        publisher.stop()
        delivered = wait_delivered(readers, publisher, timeout=15)
    result = tally(
        "worker kill -9 under load",
        f"SIGKILL to 1 of 2 workers ({on_victim} of {STREAMS} streams on it)",
        publisher,
        readers,
        killed_at,
    )
    record(result)
    assert delivered, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert result.reconnects >= on_victim, result  # the victim's streams came back
    assert result.recover_s is not None and result.recover_s < 5, result
