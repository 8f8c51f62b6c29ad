"""A browser sent back by the farewell's ``retry:`` while the server still drains.

With ``STREAM_DRAIN_SECONDS`` longer than ``STREAM_RETRY_MS`` a plain
EventSource reconnects to the draining server. In the default ``status``
reject mode that used to be a 503, after which a browser never retries
again; the refusal while draining is now always a 200 with ``retry:`` and
``event: shutdown``, so the page keeps coming back until a server takes it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import launch_browser
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

pytestmark = pytest.mark.integration

ENV = {
    "STREAM_DRAIN_SECONDS": "4",
    "STREAM_RETRY_MS": "300",
    "STREAM_RECONNECT_JITTER_MS": "500",
}

WATCH = """
() => {
  window.states = [];
  window.shutdowns = [];
  window.messages = [];
  const es = new EventSource("/stream?topic=drain");
  es.addEventListener("shutdown", (e) => { window.shutdowns.push(JSON.parse(e.data)); });
  es.addEventListener("message", (e) => { window.messages.push(e.data); });
  window.sampler = setInterval(() => window.states.push(es.readyState), 20);
  window.es = es;
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.mark.timeout(90)
def test_event_source_survives_a_long_drain_and_reconnects_to_the_next_server(tmp_path: Path, browser: Any) -> None:
    first = ServerProcess(tmp_path / "first", ENV).start()
    second: ServerProcess | None = None
    holders: list[SSEClient] = []
    page = browser.new_page()
    try:
        page.goto(first.url("/health"))
        page.evaluate(WATCH)
        page.wait_for_function("window.es.readyState === 1", timeout=10000)
        # Streams admitted after the page's: the drain closes the page's first
        # and the others over the next four seconds.
        holders = [SSEClient(first.port, params=[("topic", "hold")]).open() for _ in range(3)]
        first.wait_for(lambda: first.health()["stream"]["active_connections"] == 4)
        first.send_signal(signal.SIGTERM)
        # The farewell, then at least two refusals while the drain goes on.
        page.wait_for_function("window.shutdowns.length >= 3", timeout=10000)
        assert first.proc is not None and first.proc.poll() is None, "the drain ended too soon to test anything"
        assert first.wait(30) == 0
        assert 2 not in page.evaluate("window.states"), "the EventSource was CLOSED while the server drained"
        shutdowns = page.evaluate("window.shutdowns")
        assert all(s["reason"] == "server shutting down" and 300 <= s["retry_ms"] <= 500 for s in shutdowns)
        refused = [r for r in first.log_records() if r.get("event") == "stream_rejected"]
        assert refused and {r["reason"] for r in refused} == {"draining"}

        # A new server on the same port: the same EventSource is let in.
        second = ServerProcess(tmp_path / "second", ENV, port=first.port).start()
        second.wait_for(lambda: second.health()["stream"]["active_connections"] == 1, timeout=20)
        page.wait_for_function("window.es.readyState === 1", timeout=10000)
        second.publish("drain", "back")
        page.wait_for_function("window.messages.includes('back')", timeout=10000)
        assert 2 not in page.evaluate("window.states")
    finally:
        page.close()
        for holder in holders:
            holder.close()
        first.stop(timeout=10)
        if second is not None:
            second.stop(timeout=10)
