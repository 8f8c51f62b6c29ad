"""The ``JobStore`` contract (tests/support/job_store_contract.py) against SQLite.

Redis runs the same contract in ``tests/integration/test_job_stores_redis.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.sqlite_store import SqliteJobStore
from tests.support.job_store_contract import JobStoreContract, MakeStore, stores


class TestSqliteJobStore(JobStoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        yield from stores(lambda owner: SqliteJobStore(str(tmp_path / "sub" / "jobs.db"), owner=owner))
