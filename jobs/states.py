"""Job statuses and the transitions allowed between them.

The table is the single source of truth: the store checks it before every
status write (and its SQL repeats the expected old status, so a racing
writer in another process cannot slip an invalid transition in between).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        return not TRANSITIONS[self]


TRANSITIONS: dict[Status, frozenset[Status]] = {
    # A pending job is claimed by a runner, or cancelled before it starts.
    Status.PENDING: frozenset({Status.IN_PROGRESS, Status.CANCELLED}),
    Status.IN_PROGRESS: frozenset({Status.COMPLETED, Status.CANCELLED, Status.ERROR}),
    Status.COMPLETED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.ERROR: frozenset(),
}

TERMINAL = frozenset(s for s in Status if s.terminal)


class InvalidTransition(ValueError):
    """A status change the table does not allow (e.g. completed -> in_progress)."""

    def __init__(self, current: Status, wanted: Status) -> None:
        super().__init__(f"cannot go from {current.value} to {wanted.value}")
        self.current = current
        self.wanted = wanted


def check_transition(current: Status, wanted: Status) -> None:
    """Raise ``InvalidTransition`` unless ``current -> wanted`` is allowed."""
    if wanted not in TRANSITIONS[current]:
        raise InvalidTransition(current, wanted)


def parse_status(value: str) -> Status:
    """``"pending"`` -> ``Status.PENDING``; raises ``ValueError`` naming the choices."""
    try:
        return Status(value)
    except ValueError:
        choices = ", ".join(s.value for s in Status)
        raise ValueError(f"unknown status {value!r}; one of {choices}") from None
