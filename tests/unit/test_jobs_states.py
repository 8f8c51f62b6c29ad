"""The job state machine and the job's JSON form, without a server."""

from __future__ import annotations

import pytest

from jobs.model import Job, rfc3339
from jobs.states import TERMINAL, TRANSITIONS, InvalidTransition, Status, check_transition, parse_status

ALLOWED = [
    (Status.PENDING, Status.IN_PROGRESS),
    (Status.PENDING, Status.CANCELLED),
    (Status.IN_PROGRESS, Status.COMPLETED),
    (Status.IN_PROGRESS, Status.CANCELLED),
    (Status.IN_PROGRESS, Status.ERROR),
]


def test_statuses_are_str_enum_values() -> None:
    assert [s.value for s in Status] == ["pending", "in_progress", "completed", "cancelled", "error"]
    assert Status("pending") is Status.PENDING and isinstance(Status.ERROR, str)
    assert {Status.COMPLETED, Status.CANCELLED, Status.ERROR} == TERMINAL


@pytest.mark.parametrize(("current", "wanted"), [(a, b) for a in Status for b in Status])
def test_only_the_table_transitions_are_allowed(current: Status, wanted: Status) -> None:
    if (current, wanted) in ALLOWED:
        check_transition(current, wanted)
        assert wanted in TRANSITIONS[current]
    else:
        with pytest.raises(InvalidTransition, match=f"{current.value} to {wanted.value}"):
            check_transition(current, wanted)


def test_parse_status_names_the_choices() -> None:
    assert parse_status("in_progress") is Status.IN_PROGRESS
    with pytest.raises(ValueError, match="pending, in_progress"):
        parse_status("done")


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_795_892_466_123) == "2026-11-28T19:01:06.123Z"
    assert rfc3339(None) is None


def test_job_json_has_exactly_the_documented_fields_in_order() -> None:
    job = Job("abc", "sleep", "nap", {"seconds": 1}, Status.PENDING, 0.0, None, None, None, 5, None, None, 5, 1)
    assert list(job.to_json()) == [
        "id", "type", "name", "owner", "params", "status", "progress", "message", "result", "error",
        "created_at", "started_at", "finished_at", "updated_at", "version",
    ]  # fmt: skip
    assert job.to_json()["status"] == "pending" and job.topic == "jobs/abc"
