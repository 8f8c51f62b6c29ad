"""How the jobs subsystem is put together: the store it uses, and what it
registers with the streaming service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.feed import snapshot
from jobs.states import Status
from jobs.store import viewer_for
from streaming import Observer

if TYPE_CHECKING:
    from jobs.feed import ChangeFeed
    from jobs.runner import Runner
    from jobs.store import JobStore
    from server.settings import Settings
    from server.tokens import Grant
    from streaming import TopicFilter


def make_store(settings: Settings) -> JobStore:
    """Redis when ``REDIS_URL`` is set (shared by every worker and host), else SQLite at ``JOBS_DB``."""
    if settings.redis_url:
        from jobs.redis_store import RedisJobStore

        return RedisJobStore(settings.redis)
    from jobs.sqlite_store import SqliteJobStore

    return SqliteJobStore(settings.jobs_db)


class JobsView:
    """What streams see of jobs (``streaming.JobView``): snapshots and counts."""

    statuses = tuple(s.value for s in Status)

    def __init__(self, store: JobStore, readers_checked: bool = True) -> None:
        self.store = store
        self.readers_checked = readers_checked  # false with STREAM_AUTH=off

    def snapshot(self, topics: TopicFilter, reader: Grant | None = None) -> dict[str, Any]:
        """Only the jobs ``reader`` may see (an owned job: its owner and admins)."""
        return snapshot(self.store, topics, viewer_for(reader, self.readers_checked))

    def counts(self) -> dict[str, int]:
        return self.store.counts()


class JobsObserver(Observer):
    """Starts the runner and the change feed with the worker, and stops them
    first at shutdown, so the jobs the runner marks interrupted are published
    by this process while the streams are still open."""

    def __init__(self, runner: Runner, feed: ChangeFeed) -> None:
        self.runner = runner
        self.feed = feed

    def started(self) -> None:
        self.feed.start()
        self.runner.start()

    def stopping(self) -> None:
        self.runner.stop()
        self.feed.stop()
