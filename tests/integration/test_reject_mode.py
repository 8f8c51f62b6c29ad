"""Soft rejection: a plain EventSource page at capacity backs off and comes back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import StartServer
from tests.support.sse import SSEClient

WATCH = """
() => {
  window.states = [];
  window.overloaded = 0;
  window.messages = [];
  window.opened = 0;
  const es = new EventSource("/stream?topic=soft");
  es.addEventListener("overloaded", () => { window.overloaded += 1; });
  es.addEventListener("message", (e) => { window.messages.push(e.data); });
  es.addEventListener("open", () => { window.opened += 1; });
  window.sampler = setInterval(() => window.states.push(es.readyState), 25);
  window.es = es;
}
"""


@pytest.mark.timeout(60)
def test_event_source_at_capacity_never_closes_and_connects_when_a_slot_frees(
    start_server: StartServer, browser: Any
) -> None:
    server = start_server(
        {
            "STREAM_MAX_CONNECTIONS": "1",
            "STREAM_REJECT_MODE": "retry",
            "STREAM_RETRY_MS": "300",
            "STREAM_RECONNECT_JITTER_MS": "600",
            "STREAM_KEEPALIVE_INTERVAL": "0.5",
        }
    )
    holder = SSEClient(server.port, params=[("topic", "other")]).open()
    page = browser.new_page()
    try:
        page.goto(server.url("/health"))
        page.evaluate(WATCH)
        page.wait_for_function("window.overloaded >= 2", timeout=10000)
        assert 2 not in page.evaluate("window.states"), "EventSource must never reach CLOSED"
        assert server.health()["stream"]["rejected"] >= 2
        holder.close()
        # Each refusal is a 200 that ends: "open" fires once per attempt. Once the
        # slot is free, an attempt stays open and receives events.
        server.wait_for(lambda: server.health()["stream"]["accepted"] == 2, timeout=10)
        page.wait_for_function("window.es.readyState === 1", timeout=10000)
        server.publish("soft", "hello")
        page.wait_for_function("window.messages.includes('hello')", timeout=10000)
        states = page.evaluate("window.states")
        assert 2 not in states and page.evaluate("window.es.readyState") == 1
    finally:
        page.close()
        holder.close()


@pytest.mark.timeout(30)
def test_status_mode_answers_503_which_closes_an_event_source(start_server: StartServer, browser: Any) -> None:
    # The default, as the original design specified; documented as the reason for retry mode.
    server = start_server({"STREAM_MAX_CONNECTIONS": "1"})
    holder = SSEClient(server.port).open()
    page = browser.new_page()
    try:
        page.goto(server.url("/health"))
        page.evaluate(WATCH)
        page.wait_for_function("window.es.readyState === 2", timeout=10000)
    finally:
        page.close()
        holder.close()
