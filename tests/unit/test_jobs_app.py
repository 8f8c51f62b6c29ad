"""The jobs subsystem inside a Flask app, without gunicorn: wiring and broker outages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from server.settings import ConfigError, Settings
from streaming.core.broker import BrokerUnavailable
from streaming.core.events import Event
from streaming.ops.service import StreamingService


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    application = create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), history_size=0))
    yield application
    service: StreamingService = application.extensions["jobstream"]
    if service.started:
        service.shutdown(drain_seconds=0)
    service.close()


def test_init_app_wires_hooks_but_starts_nothing(app: Flask) -> None:
    service: StreamingService = app.extensions["jobstream"]
    assert service.jobs is not None
    jobs = app.extensions["jobs"]
    for hook in ("started", "stopping"):  # the observer that starts and stops the runner
        assert any(
            getattr(getattr(h, "__self__", None), "runner", None) is jobs.runner for h in service.hooks.get(hook)
        )
    assert app.extensions["jobs"].runner.running == {} and not service.started
    assert service.jobs.counts()["total"] == 0


def test_broker_outage_refuses_the_job_with_503(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    service: StreamingService = app.extensions["jobstream"]

    def down(topic: str, event: str, data: object, owner: str | None = None) -> Event:
        raise BrokerUnavailable("redis is down")

    monkeypatch.setattr(service, "publish", down)
    client = app.test_client()
    response = client.post("/jobs", json={"type": "sleep", "params": {"seconds": 0}})
    assert response.status_code == 503 and "broker unavailable" in response.get_json()["error"]
    assert client.get("/jobs").get_json() == {"jobs": [], "next_cursor": None}  # not accepted, not kept


def test_an_unimportable_handler_module_is_a_config_error(tmp_path: Path) -> None:
    settings = Settings(jobs_db=str(tmp_path / "jobs.db"), history_size=0, jobs_handlers=("no.such.module",))
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    assert caught.value.name == "JOBS_HANDLERS" and caught.value.value == "no.such.module"
