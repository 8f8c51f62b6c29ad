"""Driving the job board (templates/board.html, static/) in Playwright: pages, rows, jobs.

Used by the tests/integration/test_board_*.py files; the ``browser`` and
``context`` fixtures are in tests/integration/conftest.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from playwright.sync_api import BrowserContext, Page, ViewportSize

from tests.support.server import ServerProcess

# Quick reconnects so restarts and refusals resolve within a test's budget.
FAST_RECONNECT = {"STREAM_RETRY_MS": "500", "STREAM_RECONNECT_JITTER_MS": "1000"}
LAPTOP: ViewportSize = {"width": 1280, "height": 800}


def open_board(context: BrowserContext, server: ServerProcess, mode: str = "auto", topic: str = "") -> Page:
    page = context.new_page()
    extra = f"&topic={quote(topic)}" if topic else ""
    page.goto(server.url(f"/?mode={mode}{extra}"), wait_until="commit")
    return page


def mode_of(page: Page) -> str:
    return page.locator("#conn").get_attribute("data-mode") or ""


def state(page: Page) -> Any:
    return page.locator("#conn-state")


def row(page: Page, job_id: str) -> Any:
    return page.locator(f'#job-rows tr[data-job-id="{job_id}"]')


def create_job(server: ServerProcess, type_: str, params: dict[str, Any] | None = None, name: str | None = None) -> Any:
    body: dict[str, Any] = {"type": type_, "params": params or {}}
    if name is not None:
        body["name"] = name
    response = server.http.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def get_job(server: ServerProcess, job_id: str) -> Any:
    return server.http.get(f"/jobs/{job_id}").json()


def wait_job(server: ServerProcess, job_id: str, statuses: tuple[str, ...], timeout: float = 10) -> Any:
    return server.wait_for(lambda: (j := get_job(server, job_id))["status"] in statuses and j, timeout)


def epoch_ms(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000


def active_streams(server: ServerProcess) -> int:
    return int(server.health()["stream"]["active_connections"])
