"""The job record as callers see it, and its JSON form.

Timestamps are integer milliseconds since the epoch inside (cheap to store,
compare and index) and RFC 3339 UTC with milliseconds on the wire.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobs.states import Status

MAX_NAME_LENGTH = 200


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_job_id() -> str:
    """Opaque and URL-safe (hex), so ``jobs/<id>`` is a plain topic name."""
    return secrets.token_hex(8)


def rfc3339(ms: int | None) -> str | None:
    """``1795892466123`` -> ``"2026-11-28T19:01:06.123Z"``."""
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    type: str
    name: str
    params: dict[str, Any]
    status: Status
    progress: float
    message: str | None
    result: Any
    error: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    updated_at: int
    version: int
    # The ``sub`` of the token that created the job; None: unowned, visible to all.
    owner: str | None = None

    @property
    def topic(self) -> str:
        return f"jobs/{self.id}"

    def to_json(self) -> dict[str, Any]:
        """The API body and the ``event: job`` data, field order fixed."""
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "owner": self.owner,
            "params": self.params,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "updated_at": rfc3339(self.updated_at),
            "version": self.version,
        }
