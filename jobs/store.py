"""The job store interface, and the factory that picks an implementation.

Everything the runner, the views and the change feed need goes through
``JobStore``, so ``RedisJobStore`` (``jobs.redis_store``) sits beside
``SqliteJobStore`` without either of them knowing. Rules every implementation keeps:

* every change bumps ``version`` by exactly one and sets ``updated_at``;
* status writes follow ``jobs.states.TRANSITIONS`` and are conditional on the
  expected current status, so racing processes cannot break the table;
* ``claim`` is atomic across processes: a job is handed to one runner once;
* ``counts`` is cheap (no scan of the jobs), it is polled by ``/health``;
* every change is also appended to a change feed that other processes read
  (``changes``), tagged with the writing store's ``instance``.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from jobs.model import Job
from jobs.states import Status

if TYPE_CHECKING:
    from server.tokens import Grant

MAX_PAGE = 500


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class Selection:
    """Which jobs a stream's topic filter covers: all, or by id and id prefix."""

    everything: bool = False
    ids: Collection[str] = ()
    id_prefixes: Collection[str] = ()


@dataclass(frozen=True)
class Viewer:
    """Whose jobs a reader sees: every job (``everything``: admins, the
    operator, and every reader with ``STREAM_AUTH=off``), or the unowned
    ones and those owned by ``sub`` (``None``: an anonymous reader)."""

    everything: bool = True
    sub: str | None = None

    def sees(self, job: Job) -> bool:
        return self.everything or job.owner is None or job.owner == self.sub


EVERYONE = Viewer()


def viewer_for(grant: Grant | None, readers_checked: bool = True) -> Viewer:
    """The ``Viewer`` of a reader with this grant (``None``: anonymous).

    ``readers_checked`` is false with ``STREAM_AUTH=off``: readers are not
    identified there, and everyone sees every job, as before owners.
    """
    if not readers_checked or (grant is not None and grant.admin):  # OPERATOR is an admin grant
        return EVERYONE
    return Viewer(everything=False, sub=grant.sub or None if grant is not None else None)


class JobStore(Protocol):
    instance: str
    """Names this store object in the change feed and as a job's owner."""

    def create(self, type: str, name: str, params: dict[str, Any], owner: str | None = None) -> Job: ...

    def get(self, job_id: str) -> Job | None: ...

    def page(
        self, status: Status | None = None, limit: int = 50, cursor: str | None = None, viewer: Viewer = EVERYONE
    ) -> Page:
        """Newest first, only jobs ``viewer`` sees; raises ``InvalidCursor``
        for a cursor it did not issue. A page may hold fewer than ``limit``
        jobs while ``next_cursor`` still points further."""
        ...

    def newest(self, selection: Selection, limit: int = MAX_PAGE, viewer: Viewer = EVERYONE) -> list[Job]: ...

    def withdraw(self, job_id: str) -> bool:
        """Delete a job that is still pending (its creation could not be announced)."""
        ...

    def claim(self, types: Collection[str]) -> Job | None:
        """Atomically move the oldest pending job of one of ``types`` to in_progress, owned by us."""
        ...

    def progress(self, job_id: str, fraction: float, message: str | None) -> Job | None:
        """None when the job is no longer ours and in progress (e.g. recovered by another process)."""
        ...

    def finish(
        self,
        job_id: str,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> Job | None: ...

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a pending job at once, or flag a running one for its runner.

        Raises ``JobNotFound``, or ``InvalidTransition`` when already terminal.
        """
        ...

    def cancel_requested(self, job_ids: Collection[str]) -> set[str]: ...

    def heartbeat(self) -> None:
        """Tell other processes that this store's runner is alive."""
        ...

    def recover_interrupted(self) -> list[Job]:
        """in_progress jobs of dead runners -> error ``"interrupted"``."""
        ...

    def release(self) -> list[Job]:
        """On shutdown: our own running jobs -> error ``"interrupted"``; unregister."""
        ...

    def counts(self) -> dict[str, int]: ...

    def changes(self, after: int, limit: int = 1000) -> tuple[list[dict[str, Any]], int]:
        """Job JSON written by *other* store instances after position ``after``, and the new position."""
        ...

    def last_change(self) -> int: ...

    def close(self) -> None: ...


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"j1:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, number = text.partition(":")
        if tag != "j1" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidCursor(f"cursor {cursor!r} is not one this server issued") from None
