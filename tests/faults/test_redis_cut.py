"""The link between the workers and Redis cut for 10 s: publishes get 503 or succeed, streams resume, nothing acknowledged lost.

Redis runs in its own network namespace behind a veth; the cut is iptables
DROP on its end (tests/support/faults.py): no RST, the workers' Redis
connections hang until their 1 s socket timeout. Two workers, six streams
straight to gunicorn, a publisher at 20 events/s throughout.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import StartServer
from tests.support.fault_clients import Publisher, health, readers_of, running
from tests.support.fault_tally import record, tally, wait_delivered
from tests.support.faults import Netns, RedisInNetns

TOPIC = "faults/cut"
STREAMS = 6
CUT_SECONDS = 10.0  # the figure


@pytest.mark.timeout(75)
@pytest.mark.usefixtures("network_faults")
def test_a_10s_redis_cut_loses_nothing_acknowledged(start_server: StartServer, tmp_path: Path) -> None:
    with Netns() as ns:
        link = ns.link()
        redis = RedisInNetns(ns, tmp_path / "redis").start(link)
        server = start_server({"REDIS_URL": redis.url(link), "WEB_CONCURRENCY": "2", "STREAM_KEEPALIVE_INTERVAL": "1"})

        readers = readers_of(server.port, TOPIC, STREAMS)
        publisher = Publisher(server.url(), TOPIC, "tick", rate=20, timeout=5)
        with running(publisher, readers):
            server.wait_for(lambda: all(r.connects for r in readers), timeout=10)
            publisher.start()
            server.wait_for(lambda: len(publisher.acked) >= 20, timeout=10)
            link.cut()
            cut_at = time.monotonic()
            # Every worker notices within its socket timeout: /health says so.
            server.wait_for(lambda: health(server.url()) == (503, "down"), timeout=5)
            acked_in_cut = len(publisher.acked)
            time.sleep(max(0.0, cut_at + CUT_SECONDS - time.monotonic()))  # the fault's length is the test's point
            link.heal()
            healed_at = time.monotonic()
            server.wait_for(lambda: len(publisher.acked_after(healed_at)) >= 20, timeout=15)
            publisher.stop()
            delivered = wait_delivered(readers, publisher, timeout=15)
    result = tally(
        "Redis link cut 10 s", "iptables DROP on the Redis host's veth, both ways", publisher, readers, healed_at
    )
    record(result)
    assert delivered, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert publisher.refused.get(503, 0) > 0, publisher.refused  # the cut was answered, not hidden
    assert set(publisher.refused) <= {503}, publisher.refused  # no 500, no hang past the client's timeout
    assert len(publisher.acked) - acked_in_cut >= 20  # publishing works again
    assert result.recover_s is not None and result.recover_s < 5, result
