"""Every test under tests/integration is an ``integration`` test.

They start real servers or processes (gunicorn, redis-server, nginx,
Chromium, job workers, the bench's load generator); ``-m "not integration"``
and ``python -m pytest tests/unit`` leave them all out. The directory decides,
not the fixtures a test happens to use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from tests.support.board import LAPTOP
from tests.support.browser import launch_browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Called with the whole session's items, not only this directory's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium; skips without /usr/bin/chromium."""
    for launched in launch_browser():
        yield cast("Browser", launched)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A laptop-sized browser context with a 15 s default timeout."""
    ctx = browser.new_context(viewport=LAPTOP)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()
