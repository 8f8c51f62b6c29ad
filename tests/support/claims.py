"""Shared by the job store tests: many runners claiming at once."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from jobs.store import JobStore


def claim_concurrently(stores: Sequence[JobStore], types: Sequence[str], timeout: float = 30.0) -> list[list[str]]:
    """Each store claims in its own thread until the queue is empty; the ids each one got."""
    taken: list[list[str]] = [[] for _ in stores]

    def drain(index: int) -> None:
        while (job := stores[index].claim(types)) is not None:
            taken[index].append(job.id)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return taken
