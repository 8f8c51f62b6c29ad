"""One host partitioned from Redis while another keeps it: the cut host says so on /health, its streams catch up after the heal.

Redis runs in its own network namespace with one veth per host (two
gunicorn servers, one worker each): the partition is iptables DROP on host
B's veth only. Host A keeps publishing and delivering; host B's /health
turns 503 with ``"broker": "down"`` while its streams stay open, and after
the heal its reader resumes from its last id, so B's streams get every
event A acknowledged meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import StartServer
from tests.support.fault_clients import Publisher, health, readers_of, running
from tests.support.fault_tally import record, tally, wait_delivered
from tests.support.faults import Netns, RedisInNetns

TOPIC = "faults/partition"
PER_HOST = 3
PARTITION_SECONDS = 5.0


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("network_faults")
def test_a_host_cut_from_redis_degrades_and_its_streams_catch_up(start_server: StartServer, tmp_path: Path) -> None:
    with Netns() as ns:
        link_a, link_b = ns.link(), ns.link()
        redis = RedisInNetns(ns, tmp_path / "redis").start(link_a)
        env = {"STREAM_KEEPALIVE_INTERVAL": "1"}
        host_a = start_server({**env, "REDIS_URL": redis.url(link_a)}, name="host-a")
        host_b = start_server({**env, "REDIS_URL": redis.url(link_b)}, name="host-b")
        on_a, on_b = readers_of(host_a.port, TOPIC, PER_HOST), readers_of(host_b.port, TOPIC, PER_HOST)
        readers = on_a + on_b
        publisher = Publisher(host_a.url(), TOPIC, "tick", rate=20)
        with running(publisher, readers):
            host_a.wait_for(lambda: all(r.connects for r in readers), timeout=10)
            publisher.start()
            host_a.wait_for(lambda: len(publisher.acked) >= 10, timeout=10)
            link_b.cut()
            cut_at = time.monotonic()
            host_b.wait_for(lambda: health(host_b.url()) == (503, "down"), timeout=5)
            detected_s = time.monotonic() - cut_at
            assert health(host_a.url()) == (200, "up")
            # A's streams still get A's events during the partition.
            mark = len(publisher.acked)
            host_a.wait_for(lambda: len(publisher.acked) >= mark + 10, timeout=5)
            assert wait_delivered(on_a, publisher, timeout=5)
            time.sleep(max(0.0, cut_at + PARTITION_SECONDS - time.monotonic()))  # the partition's length
            link_b.heal()
            healed_at = time.monotonic()
            host_b.wait_for(lambda: health(host_b.url()) == (200, "up"), timeout=10)
            host_a.wait_for(lambda: len(publisher.acked_after(healed_at)) >= 10, timeout=10)
            publisher.stop()
            delivered = wait_delivered(readers, publisher, timeout=15)
    result = tally(
        "host partitioned from Redis 5 s",
        f"iptables DROP on host B's veth to Redis (B: /health 503 after {detected_s:.1f} s)",
        publisher,
        readers,
        healed_at,
    )
    record(result)
    assert delivered, result
    assert result.lost == 0, result
    assert result.duplicated == 0, result
    assert publisher.refused == {}, publisher.refused  # A never lost Redis
    assert result.recover_s is not None and result.recover_s < 5, result
