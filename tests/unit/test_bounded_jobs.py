"""``JOBS_MAX_PENDING``: past it ``POST /jobs`` is a 503 naming the limit, and
nothing is created; below it again, creates succeed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.support.apps import app_in

LONG = {"type": "sleep", "params": {"seconds": 60, "steps": 1000}}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from app_in(tmp_path, jobs_max_pending=2, jobs_concurrency=1)


def test_past_the_pending_limit_a_create_is_a_503_and_creates_nothing(app: Flask) -> None:
    http = app.test_client()
    answers = [http.post("/jobs", json=LONG) for _ in range(4)]  # one runs, the rest wait
    refused = [a for a in answers if a.status_code == 503]
    assert refused, [a.status_code for a in answers]
    answer = refused[0]
    assert answer.headers["Retry-After"] == "5"
    assert answer.json == {  # type: ignore[comparison-overlap]
        "error": "too many pending jobs: 2 (JOBS_MAX_PENDING=2); retry later",
        "pending": 2,
        "limit": 2,
    }
    created = [a for a in answers if a.status_code == 201]
    counts = http.get("/health").json["jobs"]  # type: ignore[index]
    assert counts["total"] == len(created) and counts["pending"] <= 2
    pending = [job["id"] for job in http.get("/jobs?status=pending").json["jobs"]]  # type: ignore[index]
    assert http.post(f"/jobs/{pending[0]}/cancel", json={}).status_code == 200
    assert http.post("/jobs", json=LONG).status_code == 201  # room again
