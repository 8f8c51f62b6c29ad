"""How job changes reach streams: topics, snapshots, and the cross-process feed.

The server process publishes its own changes the moment they are written.
Changes written by other processes on the same database (``python -m
jobs.worker``) are read from the store's change feed every
``FEED_POLL_SECONDS`` and published here, so every state change a worker
makes reaches the streams too, in order, about half a second later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from jobs.store import EVERYONE, MAX_PAGE, JobStore, Selection, Viewer
from server.background import Background
from streaming import Delivery, StreamingService, TopicFilter

log = logging.getLogger("jobstream.jobs")

TOPIC_PREFIX = "jobs/"
EVENT = "job"
FEED_POLL_SECONDS = 0.5


def topic_of(job_id: str) -> str:
    return f"{TOPIC_PREFIX}{job_id}"


def publisher(service: StreamingService) -> Callable[[dict[str, Any]], None]:
    """``announce(job_json)``: ``event: job`` on ``jobs/<id>`` (``delivery_of``). Raises ``BrokerUnavailable``."""

    def announce(job: dict[str, Any]) -> None:
        service.publish(topic_of(job["id"]), EVENT, job, delivery_of(job))

    return announce


def delivery_of(job: dict[str, Any], owners: bool = True) -> Delivery:
    """How a job change is delivered: private to the job's owner (when
    ``owners``: readers are identified), and low priority, conflated by job
    id, when it is a progress report. Every state change is high priority:
    created (version 1), started (the claim, version 2), and the end states.
    Progress is what comes between: ``in_progress`` after the claim."""
    progress = job["status"] == "in_progress" and job["version"] > 2
    owner = job.get("owner") if owners else None
    return Delivery(owner=owner, low=progress, conflate=job["id"] if progress else None)


def selection_for(topics: TopicFilter) -> Selection:
    """The jobs whose topic ``jobs/<id>`` a stream's filter matches."""
    if topics.everything or any(TOPIC_PREFIX.startswith(p) for p in topics.prefixes):
        return Selection(everything=True)
    return Selection(
        ids=[t[len(TOPIC_PREFIX) :] for t in topics.exact if t.startswith(TOPIC_PREFIX) and len(t) > len(TOPIC_PREFIX)],
        id_prefixes=[p[len(TOPIC_PREFIX) :] for p in topics.prefixes if p.startswith(TOPIC_PREFIX)],
    )


def snapshot(store: JobStore, topics: TopicFilter, viewer: Viewer = EVERYONE) -> dict[str, Any]:
    """The ``event: snapshot`` body: matching jobs ``viewer`` sees, newest first, at most 500."""
    return {"jobs": [job.to_json() for job in store.newest(selection_for(topics), MAX_PAGE, viewer)]}


class ChangeFeed:
    """Publishes the changes other processes wrote to the store."""

    def __init__(self, store: JobStore, announce: Callable[[dict[str, Any]], None]) -> None:
        self.store = store
        self.announce = announce
        self.position = 0
        self._poller = Background("jobstream-feed", self._loop)

    def start(self) -> None:
        if self._poller.started:
            return
        # Older changes are already in the store (snapshots show them); start at now.
        self.position = self.store.last_change()
        self._poller.start()

    def poll(self) -> int:
        """Publish what other processes wrote since the last poll; returns how many."""
        changes, self.position = self.store.changes(self.position)
        for job in changes:
            try:
                self.announce(job)
            except Exception:
                log.exception("job change not published", extra={"event": "job_publish_failed", "job_id": job["id"]})
        return len(changes)

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(FEED_POLL_SECONDS):
            try:
                self.poll()  # up to 1000 changes per poll is far more than runners write
            except Exception:
                log.exception("job change feed poll failed; retrying")

    def stop(self) -> None:
        self._poller.stop()
