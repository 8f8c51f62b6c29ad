"""The ``JobStore`` contract (tests/support/job_store_contract.py) against a real redis-server.

SQLite runs the same contract in ``tests/unit/test_job_stores.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.redis_store import RedisJobStore
from tests.support.job_store_contract import JobStoreContract, MakeStore, stores
from tests.support.redis import RedisServer


class TestRedisJobStore(JobStoreContract):
    @pytest.fixture
    def make_store(self, redis_server: RedisServer) -> Iterator[MakeStore]:
        yield from stores(lambda owner: RedisJobStore(redis_server.url, owner=owner))
