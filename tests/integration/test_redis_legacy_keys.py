"""An upgrade keeps what the untagged ``jobstream:*`` keys held: renamed once to ``{jobstream}:*``."""

from __future__ import annotations

import pytest

from jobs.redis_store import RedisJobStore
from streaming.scaleout.redis_keys import RENAMED_KEY, STREAM_KEY, rename_legacy_keys
from tests.support.redis import RedisServer


@pytest.mark.timeout(20)
def test_jobs_and_events_under_the_old_names_are_read_after_the_upgrade(redis_server: RedisServer) -> None:
    old = RedisJobStore(redis_server.url, prefix="jobstream:")  # the layout before the hash tag
    job = old.create("sleep", "before the upgrade", {"seconds": 0})
    raw = redis_server.client()
    ids = [raw.xadd("jobstream:events", {"topic": "t", "event": "message", "data": str(i)}) for i in range(3)]
    old.close()

    store = RedisJobStore(redis_server.url)
    assert store.get(job.id) == job  # the first use renames
    assert [entry_id for entry_id, _ in raw.xrange(STREAM_KEY) or ()] == ids
    assert raw.keys("jobstream:*") == []
    assert raw.exists(RENAMED_KEY)
    # Once per database: a later key under an old name stays where it is.
    raw.set("jobstream:stray", "1")
    assert rename_legacy_keys(raw) == -1
    assert store.page().jobs == [job]
    store.close()
