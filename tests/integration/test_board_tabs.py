"""The job board in a real browser: many tabs, one connection.

Debian's headless Chromium driven by Playwright; each test starts its own
gunicorn (the stream counts are the subject) except the custom-event test,
which shares one. Where a test must be sure the page learns of changes only
by resuming from its last event id, the resume is held back with
``context.route`` until the jobs have changed (the leader hand-over).
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.conftest import StartServer
from tests.support.board import (
    FAST_RECONNECT,
    active_streams,
    create_job,
    epoch_ms,
    mode_of,
    open_board,
    row,
    state,
    wait_job,
)
from tests.support.server import ServerProcess


class StreamGate:
    """Holds the browser's ``/stream`` requests that match, until ``release``."""

    def __init__(self, context: BrowserContext, only_resumes: bool = False) -> None:
        self.held: list[Route] = []
        self.closed = False
        self.only_resumes = only_resumes
        context.route(lambda url: "/stream" in url, self._handle)

    def _handle(self, route: Route) -> None:
        resume = "last_event_id=" in route.request.url or route.request.headers.get("last-event-id")
        if self.closed or (self.only_resumes and not resume):
            route.continue_()
        else:
            self.held.append(route)

    def wait_held(self, page: Page, timeout: float) -> float:
        """Seconds until a request was held (the page's event loop must run meanwhile)."""
        started = time.monotonic()
        while not self.held:
            assert time.monotonic() - started < timeout, f"no /stream request within {timeout}s"
            page.wait_for_timeout(20)
        return time.monotonic() - started

    def release(self) -> None:
        self.closed = True
        for route in self.held:
            route.continue_()
        self.held.clear()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sixty_tabs_share_one_connection_and_all_see_a_job_complete(
    start_server: StartServer, context: BrowserContext
) -> None:
    server = start_server(FAST_RECONNECT)
    pages = [open_board(context, server) for _ in range(60)]
    for page in pages:
        expect(state(page)).to_have_text("live", timeout=60_000)
    assert active_streams(server) <= 2
    assert mode_of(pages[0]) == "worker"

    # One step: all 60 headless tabs count as visible and render every event
    # (a real browser renders only the tab in front); on 2 cores shared with
    # other work a burst of progress events queued up to ~2.5 s behind, and
    # the last of 60 renderers applied the final state 2.3 s after the first.
    first = pages[0]
    first.select_option("#job-type", "sleep")
    first.fill("#job-params", '{"seconds": 1, "steps": 1}')
    first.fill("#job-name", "sixty tabs")
    first.click("#start-button")
    job_row = first.locator("#job-rows tr", has_text="sixty tabs")
    expect(job_row).to_have_count(1)
    job_id = job_row.get_attribute("data-job-id")
    assert job_id
    job = wait_job(server, job_id, ("completed",))
    finished_ms = epoch_ms(job["finished_at"])
    for page in pages:
        expect(row(page, job_id).locator(".badge")).to_have_text("completed", timeout=10_000)
    # When each tab applied the final version, by the same clock as finished_at.
    # A tab that missed the relayed event never shows "completed" (the wait
    # above fails); this bound is for delay, above the renderers' spread.
    received = [float(p.eval_on_selector(f'tr[data-job-id="{job_id}"]', "r => r.dataset.receivedAt")) for p in pages]
    assert max(received) - finished_ms < 5000, [round(r - finished_ms) for r in received]
    assert active_streams(server) <= 2


@pytest.mark.timeout(60)
def test_leader_tab_closing_hands_over_and_no_tab_misses_an_event(
    start_server: StartServer, context: BrowserContext
) -> None:
    server = start_server(FAST_RECONNECT)
    pages = [open_board(context, server, mode="locks") for _ in range(4)]
    for page in pages:
        expect(state(page)).to_have_text("live")
    modes = [mode_of(p) for p in pages]
    assert sorted(modes) == ["follower", "follower", "follower", "leader"]
    assert active_streams(server) == 1
    long_job = create_job(server, "sleep", {"seconds": 60, "steps": 60}, name="cancelled in the gap")
    for page in pages:
        expect(row(page, long_job["id"]).locator(".badge")).to_have_text("in progress")

    # Hold the new leader's resume until jobs have finished on the server.
    gate = StreamGate(context, only_resumes=True)
    leader = pages[modes.index("leader")]
    rest = [p for p in pages if p is not leader]
    leader.close()
    took_over_in = gate.wait_held(rest[0], timeout=2)
    assert took_over_in < 2
    server.http.post(f"/jobs/{long_job['id']}/cancel", json={})
    quick = create_job(server, "sleep", {"seconds": 0.2, "steps": 2}, name="finished in the gap")
    wait_job(server, quick["id"], ("completed",))
    wait_job(server, long_job["id"], ("cancelled",))
    for page in rest:
        expect(row(page, quick["id"])).to_have_count(0)  # nobody could have seen it yet
    gate.release()

    for page in rest:
        expect(state(page)).to_have_text("live")
        expect(row(page, long_job["id"]).locator(".badge")).to_have_text("cancelled")
        expect(row(page, quick["id"]).locator(".badge")).to_have_text("completed")
    assert sorted(mode_of(p) for p in rest) == ["follower", "follower", "leader"]
    resumed = [r for r in server.log_records() if r.get("event") == "stream_opened" and r.get("last_event_id")]
    assert len(resumed) == 1

    # And the new leader keeps relaying live updates.
    after = create_job(server, "fail", {"message": "after the hand-over"})
    for page in rest:
        expect(row(page, after["id"]).locator(".badge")).to_have_text("error")
    assert active_streams(server) == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["worker", "locks"])
def test_custom_event_names_reach_every_tab_through_the_shared_connection(
    shared_server: ServerProcess, context: BrowserContext, mode: str
) -> None:
    # Topics under jobs/ are the jobs API's own: a page adds one of its own for its events.
    pages = [open_board(context, shared_server, mode=mode, topic="builds/*") for _ in range(2)]
    for page in pages:
        expect(state(page)).to_have_text("live")
        page.evaluate("() => { window.logs = []; window.jobstream.on('log', (data) => window.logs.push(data.line)); }")
    # Let the "listen" messages reach whoever holds the connection before publishing.
    pages[-1].wait_for_timeout(100)
    shared_server.publish(f"builds/{mode}/log", {"line": f"hello {mode}"}, event="log")
    for page in pages:
        page.wait_for_function("() => window.logs.length === 1")
        assert page.evaluate("window.logs") == [f"hello {mode}"]
