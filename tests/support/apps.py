"""An app in process for unit tests, closed after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask

from app import create_app
from server.settings import Settings
from streaming.ops.service import StreamingService


def app_in(tmp_path: Path, **settings: Any) -> Iterator[Flask]:
    """A fixture's body: ``create_app`` on a database in ``tmp_path`` with
    ``settings``; after the test, its service shut down and closed."""
    application = create_app(Settings(**{"jobs_db": str(tmp_path / "jobs.db"), **settings}))
    yield application
    service: StreamingService = application.extensions["jobstream"]
    if service.started:
        service.shutdown(drain_seconds=0)
    service.close()
