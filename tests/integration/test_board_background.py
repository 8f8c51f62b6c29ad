"""Background tabs in a real browser: when every tab of the browser is hidden,
the shared stream goes to ``?qos=background`` and gets a job's progress at
most once per interval and its state changes at once; when a tab is shown it
comes back to the foreground and catches up, with no event lost.

Headless Chromium keeps every page "visible", so an init script lets the test
set ``document.visibilityState`` and fire ``visibilitychange``, which is all
the Page Visibility API gives a page.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import StartServer
from tests.support.board import create_job, open_board, wait_job
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

API_TOKEN = "background-operator"
INTERVAL = 2.0

EMULATE_VISIBILITY = """
window.__hidden = false;
Object.defineProperty(Document.prototype, "visibilityState", {
  configurable: true, get() { return window.__hidden ? "hidden" : "visible"; } });
Object.defineProperty(Document.prototype, "hidden", { configurable: true, get() { return window.__hidden; } });
window.__setHidden = (hidden) => { window.__hidden = hidden; document.dispatchEvent(new Event("visibilitychange")); };
window.__log = [];
"""

RECORD = """() => window.jobstream.on("job", (job, msg) => window.__log.push(
  {id: msg.id, status: job.status, version: job.version, late: !!msg.late, at: performance.now()}))"""


def _qos(server: ServerProcess) -> list[str]:
    clients = server.http.get("/admin/clients", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()["clients"]
    return sorted(c["qos"] for c in clients if "Chrome" in c["user_agent"])  # the browser's, not the witness


def _log(page: Page) -> list[dict[str, Any]]:
    """The job events the page got (with an id: not the picture a tab is handed on joining)."""
    return [e for e in page.evaluate("() => window.__log") if e["id"]]


def _board(context: BrowserContext, server: ServerProcess) -> Page:
    page = open_board(context, server)
    page.wait_for_function("() => window.jobstream && window.jobstream.status.state === 'live'")
    page.evaluate(RECORD)
    return page


@pytest.mark.timeout(90)
def test_hidden_tabs_get_spaced_progress_and_catch_up_when_shown(
    start_server: StartServer, context: BrowserContext
) -> None:
    server = start_server({"API_TOKEN": API_TOKEN, "STREAM_BACKGROUND_INTERVAL": str(INTERVAL)})
    server.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    context.add_init_script(EMULATE_VISIBILITY)
    tabs = [_board(context, server), _board(context, server)]
    server.wait_for(lambda: _qos(server) == ["foreground"], timeout=10)  # one connection for both tabs
    tabs[0].evaluate("() => window.__setHidden(true)")
    tabs[1].wait_for_timeout(300)  # a message to the worker; nothing to await on the server side
    assert _qos(server) == ["foreground"]  # one tab still shown
    tabs[1].evaluate("() => window.__setHidden(true)")
    server.wait_for(lambda: _qos(server) == ["background"], timeout=10)
    witness = SSEClient(server.port, params=[("topic", "jobs/*")]).open()  # a foreground reader
    try:
        job = create_job(server, "sleep", {"seconds": 4, "steps": 40})
        wait_job(server, job["id"], ("completed",), timeout=20)
        for tab in tabs:
            tab.wait_for_function("() => window.__log.some(e => e.status === 'completed' && e.id)")
        hidden = _log(tabs[1])
        progress = [e for e in hidden if e["status"] == "in_progress" and e["version"] > 2]
        seconds = (hidden[-1]["at"] - hidden[0]["at"]) / 1000
        assert len(progress) <= seconds / INTERVAL + 1, progress  # at most one per interval
        statuses = [e["status"] for e in hidden]
        assert statuses[0] == "pending" and "in_progress" in statuses and statuses[-1] == "completed"
        witness.wait(lambda c: any('"completed"' in e.data for e in c.of("job")), timeout=10)
        everything = {e.id for e in witness.of("job")}
        assert len(everything) > len(hidden) + 10  # the foreground reader got far more
        tabs[0].evaluate("() => window.__setHidden(false)")
        server.wait_for(lambda: _qos(server) == ["foreground"], timeout=10)
        for tab in tabs:
            tab.wait_for_function(
                "(n) => new Set(window.__log.filter(e => e.id).map(e => e.id)).size >= n", arg=len(everything)
            )
            got = {e["id"] for e in _log(tab)}
            assert everything <= got  # every event of the job reached the page: none lost
            assert (
                tab.evaluate(f"() => window.jobstream.jobs().find(j => j.id === '{job['id']}').status") == "completed"
            )
    finally:
        witness.close()
