"""What only RedisJobStore does: survive a Redis restart (AOF), report an outage.

The behaviour every store shares is in ``test_job_stores.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.redis_store import RedisJobStore
from jobs.states import Status
from streaming.core.broker import BrokerUnavailable
from tests.conftest import StartRedis
from tests.support.redis import RedisServer


@pytest.fixture
def durable(start_redis: StartRedis) -> Iterator[tuple[RedisServer, RedisJobStore]]:
    server = start_redis(appendonly=True)
    store = RedisJobStore(server.url)
    yield server, store
    store.close()


def test_jobs_survive_a_redis_restart_with_aof(durable: tuple[RedisServer, RedisJobStore]) -> None:
    server, store = durable
    kept = store.create("sleep", "kept", {"seconds": 1})
    store.claim(["sleep"])
    queued = store.create("sleep", "queued", {})
    server.restart()
    assert store.get(kept.id).status is Status.IN_PROGRESS  # type: ignore[union-attr]
    assert store.counts()["total"] == 2
    assert store.claim(["sleep"]).id == queued.id  # type: ignore[union-attr]


def test_an_unreachable_redis_is_broker_unavailable(durable: tuple[RedisServer, RedisJobStore]) -> None:
    server, store = durable
    store.create("sleep", "x", {})
    server.stop()
    for call in (lambda: store.create("sleep", "y", {}), store.counts, lambda: store.claim(["sleep"])):
        with pytest.raises(BrokerUnavailable):
            call()
