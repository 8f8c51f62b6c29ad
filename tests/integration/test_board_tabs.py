"""The job board in a real browser: Debian's headless Chromium driven by Playwright.

Each test starts its own gunicorn (the stream counts and restarts are the
subject) except the rendering tests, which share one. Where a test must be
sure the page learns of changes only by resuming from its last event id, the
resume is held back until the jobs have changed: with ``context.route`` for
a tab's own EventSource (the leader hand-over), with a long ``retry:`` for
the SharedWorker's, which Playwright cannot route (the restart).
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, ViewportSize, expect

from tests.conftest import StartServer
from tests.support.browser import launch_browser
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# Quick reconnects so restarts and refusals resolve within a test's budget.
FAST_RECONNECT = {"STREAM_RETRY_MS": "500", "STREAM_RECONNECT_JITTER_MS": "1000"}
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    for launched in launch_browser():  # skips without /usr/bin/chromium
        yield cast(Browser, launched)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=LAPTOP)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


# -- helpers ---------------------------------------------------------------


def open_board(context: BrowserContext, server: ServerProcess, mode: str = "auto") -> Page:
    page = context.new_page()
    page.goto(server.url(f"/?mode={mode}"), wait_until="commit")
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


# -- one connection for many tabs -----------------------------------------


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
    # other work a burst of progress events queued up to ~2.5 s behind.
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
    received = [float(p.eval_on_selector(f'tr[data-job-id="{job_id}"]', "r => r.dataset.receivedAt")) for p in pages]
    assert max(received) - finished_ms < 2000, [round(r - finished_ms) for r in received]
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
    server.http.post(f"/jobs/{long_job['id']}/cancel")
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


# -- restarts and refusals ---------------------------------------------------


@pytest.mark.timeout(90)
def test_server_restart_shows_restarting_then_live_with_final_job_states(
    tmp_path: Path, context: BrowserContext
) -> None:
    # The page's EventSource lives in the SharedWorker, out of reach of
    # context.route; a `retry:` of 4-5 s instead keeps it away until the new
    # server has run the jobs below, so it learns of them by resuming.
    env = {"STREAM_RETRY_MS": "4000", "STREAM_RECONNECT_JITTER_MS": "5000"}
    first = ServerProcess(tmp_path / "server", env).start()
    second: ServerProcess | None = None
    try:
        page = open_board(context, first)
        expect(state(page)).to_have_text("live")
        running = create_job(first, "sleep", {"seconds": 60, "steps": 60}, name="interrupted by the restart")
        expect(row(page, running["id"]).locator(".badge")).to_have_text("in progress")

        first.send_signal(signal.SIGTERM)
        expect(state(page)).to_have_text("server restarting")
        expect(page.locator("#conn-detail")).to_contain_text("retrying")
        first.wait(20)
        second = ServerProcess(tmp_path / "server", env, port=first.port).start()
        done = create_job(second, "sleep", {"seconds": 0.1, "steps": 1}, name="ran during the restart")
        failed = create_job(second, "fail", {"message": "failed during the restart"})
        changed_by = epoch_ms(wait_job(second, done["id"], ("completed",))["finished_at"])
        changed_by = max(changed_by, epoch_ms(wait_job(second, failed["id"], ("error",))["finished_at"]))

        expect(state(page)).to_have_text("live", timeout=20_000)
        for job in second.http.get("/jobs").json()["jobs"]:
            expect(row(page, job["id"]).locator(".badge")).to_have_text(job["status"].replace("_", " "))
            expect(row(page, job["id"])).to_have_attribute("data-version", str(job["version"]))
        expect(row(page, failed["id"]).locator(".message")).to_have_text("failed during the restart")
        workers = set(second.worker_pids())  # the log file is shared with the first server
        opened = [r for r in second.log_records() if r.get("event") == "stream_opened" and r["pid"] in workers]
        assert opened and opened[-1]["last_event_id"], "the page resumed instead of starting over"
        if log_ms(opened[0]["time"]) < changed_by:
            pytest.fail("the page reconnected before the jobs changed: the restart was not covered")
    finally:
        first.stop(timeout=10)
        if second is not None:
            second.stop(timeout=10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reject_mode", ["status", "retry"])
def test_server_at_capacity_shows_busy_backs_off_and_goes_live(
    start_server: StartServer, context: BrowserContext, reject_mode: str
) -> None:
    # "status" refuses with 503 (the EventSource is CLOSED for good); "retry"
    # with 200 + event: overloaded. Keep-alives every second notice the
    # holder leaving soon after it does.
    env = {"STREAM_MAX_CONNECTIONS": "1", "STREAM_REJECT_MODE": reject_mode, "STREAM_KEEPALIVE_INTERVAL": "1"}
    server = start_server({**env, **FAST_RECONNECT})
    holder = SSEClient(server.port, params=[("topic", "jobs/*")]).open()
    try:
        holder.wait(lambda c: c.comments)
        page = open_board(context, server)
        expect(state(page)).to_have_text("server busy")
        expect(page.locator("#conn-detail")).to_contain_text("retrying")
        # A function body: Playwright would call a function the expression returned (the unsubscribe).
        page.evaluate("() => { window.seen = []; window.jobstream.onStatus((s) => window.seen.push(s.state)); }")
        server.wait_for(lambda: len(rejections(server)) >= 3, timeout=10)
        # Never "live" while refused, not even for the 200 of the retry mode.
        assert set(page.evaluate("window.seen")) == {"busy"}
    finally:
        holder.close()
    server.wait_for(lambda: server.health()["stream"]["accepted"] >= 2, timeout=20)
    expect(state(page)).to_have_text("live")
    times = rejections(server)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Jittered exponential: each wait in [d/2, d] with d doubling from 1 s.
    assert all(gap >= 0.45 for gap in gaps), gaps
    assert all(later >= earlier * 0.9 for earlier, later in itertools.pairwise(gaps)), gaps
    assert len(times) <= 6, gaps
    assert active_streams(server) == 1


@pytest.mark.timeout(60)
def test_lost_server_shows_reconnecting_then_resumes_in_a_tab_of_its_own(
    tmp_path: Path, context: BrowserContext
) -> None:
    first = ServerProcess(tmp_path / "server", FAST_RECONNECT).start()
    second: ServerProcess | None = None
    try:
        page = open_board(context, first, mode="direct")
        expect(state(page)).to_have_text("live")
        assert mode_of(page) == "direct"
        before = create_job(first, "fail", {"message": "before the crash"})
        expect(row(page, before["id"]).locator(".badge")).to_have_text("error")
        first.kill()  # no shutdown event: the connection just drops
        expect(state(page)).to_have_text("reconnecting")
        second = ServerProcess(tmp_path / "server", FAST_RECONNECT, port=first.port).start()
        after = create_job(second, "fail", {"message": "after the crash"})
        expect(state(page)).to_have_text("live", timeout=20_000)
        expect(row(page, after["id"]).locator(".badge")).to_have_text("error")
        expect(row(page, before["id"]).locator(".badge")).to_have_text("error")
    finally:
        first.stop(timeout=10)
        if second is not None:
            second.stop(timeout=10)


def rejections(server: ServerProcess) -> list[float]:
    return [log_ms(r["time"]) / 1000 for r in server.log_records() if r.get("event") == "stream_rejected"]


def log_ms(stamp: str) -> float:
    """A log line's local ``time`` as epoch milliseconds."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1000


# -- the library's pure parts ------------------------------------------------


@pytest.mark.timeout(30)
def test_library_backoff_ids_topics_and_versions(shared_server: ServerProcess, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(shared_server.url("/static/board.css"))  # same origin, no board running
    result = page.evaluate(
        """async () => {
        const m = await import("/static/jobstream.js");
        const delays = [0, 1, 2, 3, 10].map((a) => [0, 0.5, 1].map((r) => m.backoffDelay(a, 1000, 30000, () => r)));
        const store = new m.JobStore();
        const job = (version, status) => ({ id: "a", created_at: "2026-01-01T00:00:00.000Z", status, version });
        const applied = [
          store.apply({ type: "job", id: "10-0", data: job(2, "in_progress") }).length,
          store.apply({ type: "job", id: "11-0", data: job(1, "pending") }).length,  // older version
          store.apply({ type: "job", id: "10-0", data: job(3, "completed") }),       // id already seen
          store.apply({ type: "job", id: "12-0", data: job(3, "completed") }).length,
        ];
        const status = store.jobs.get("a").status;
        store.apply({ type: "snapshot", id: "13-0", data: { jobs: [job(1, "pending")] } });
        return {
          delays, applied, status, afterSnapshot: store.jobs.get("a").status, last: store.lastEventId,
          ids: [m.compareIds("2-0", "10-0"), m.compareIds("5-3", "5-12"), m.compareIds("5-1", "5-1"), m.compareIds("x", "1-0")],
          topics: [m.topicMatches("jobs/*", "jobs/a"), m.topicMatches("jobs/a", "jobs/ab"), m.topicMatches("*", "x")],
        };
    }"""
    )
    assert result["delays"] == [
        [500, 750, 1000],
        [1000, 1500, 2000],
        [2000, 3000, 4000],
        [4000, 6000, 8000],
        [15000, 22500, 30000],
    ]
    assert result["applied"] == [1, 0, None, 1]
    assert result["status"] == "completed"
    assert result["afterSnapshot"] == "pending"  # a snapshot is the server's truth
    assert result["last"] == "13-0"
    assert result["ids"] == [-1, -1, 0, None]
    assert result["topics"] == [True, False, True]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["worker", "locks"])
def test_custom_event_names_reach_every_tab_through_the_shared_connection(
    shared_server: ServerProcess, context: BrowserContext, mode: str
) -> None:
    pages = [open_board(context, shared_server, mode=mode) for _ in range(2)]
    for page in pages:
        expect(state(page)).to_have_text("live")
        page.evaluate("() => { window.logs = []; window.jobstream.on('log', (data) => window.logs.push(data.line)); }")
    # Let the "listen" messages reach whoever holds the connection before publishing.
    pages[-1].wait_for_timeout(100)
    shared_server.publish(f"jobs/{mode}/log", {"line": f"hello {mode}"}, event="log")
    for page in pages:
        page.wait_for_function("() => window.logs.length === 1")
        assert page.evaluate("window.logs") == [f"hello {mode}"]


# -- rendering -----------------------------------------------------------------


@pytest.mark.timeout(30)
def test_job_text_is_displayed_as_text_never_as_html(shared_server: ServerProcess, context: BrowserContext) -> None:
    page = open_board(context, shared_server)
    expect(state(page)).to_have_text("live")
    name = '<img src=x onerror="window.__xss = 1">'
    message = "<script>window.__xss = 2</script><b>bold</b>"
    named = create_job(shared_server, "sleep", {"seconds": 0}, name=name)
    failed = create_job(shared_server, "fail", {"message": message}, name="<i>fail</i>")
    expect(row(page, named["id"]).locator(".job-name")).to_have_text(name)
    expect(row(page, failed["id"]).locator(".message")).to_have_text(message)
    expect(row(page, failed["id"]).locator(".job-name")).to_have_text("<i>fail</i>")
    expect(row(page, failed["id"]).locator(".job-params")).to_contain_text("<script>")
    assert page.locator("#job-rows img, #job-rows script, #job-rows b, #job-rows i").count() == 0
    assert page.evaluate("window.__xss") is None


@pytest.mark.timeout(30)
def test_start_form_cancel_button_and_status_filters(shared_server: ServerProcess, context: BrowserContext) -> None:
    page = open_board(context, shared_server)
    expect(state(page)).to_have_text("live")
    expect(page.locator("#job-params")).to_have_value('{"seconds": 5, "steps": 10}')
    page.select_option("#job-type", "fail")
    expect(page.locator("#job-params")).to_have_value('{"message": "something went wrong"}')
    page.fill("#job-params", "{not json")
    page.click("#start-button")
    expect(page.locator("#form-message")).to_contain_text("not valid JSON")
    page.fill("#job-params", '{"seconds": 1}')
    page.click("#start-button")
    expect(page.locator("#form-message")).to_contain_text("unknown params")  # the server's 400, shown

    page.select_option("#job-type", "sleep")
    page.fill("#job-params", '{"seconds": 60, "steps": 60}')
    page.fill("#job-name", "to be cancelled")
    page.click(".token summary")
    page.fill("#api-token", "s3cret")  # sent if given; this server needs none
    with page.expect_request(lambda r: r.url.endswith("/jobs") and r.method == "POST") as sent:
        page.click("#start-button")
    assert sent.value.headers.get("authorization") == "Bearer s3cret"
    assert page.evaluate("sessionStorage.getItem('jobstream.apiToken')") == "s3cret"
    job_row = page.locator("#job-rows tr", has_text="to be cancelled")
    expect(job_row.locator(".badge")).to_have_text("in progress")
    job_row.locator("button.cancel").click()
    expect(job_row.locator(".badge")).to_have_text("cancelled")
    expect(job_row.locator("button.cancel")).to_be_hidden()

    all_rows = page.locator("#job-rows tr")
    expect(all_rows.filter(has_text="to be cancelled")).to_be_visible()
    page.locator('#filters input[value="cancelled"]').uncheck()
    expect(job_row).to_be_hidden()
    expect(page.locator('[data-count="cancelled"]')).not_to_have_text("0")
    page.locator('#filters input[value="cancelled"]').check()
    expect(job_row).to_be_visible()


@pytest.mark.timeout(60)
def test_screenshots_of_the_board_with_running_and_finished_jobs(start_server: StartServer, browser: Browser) -> None:
    server = start_server()
    for name, params in (("nightly export", {"seconds": 0.4, "steps": 4}), ("thumbnails", {"seconds": 0.2})):
        wait_job(server, create_job(server, "sleep", params, name=name)["id"], ("completed",))
    wait_job(
        server, create_job(server, "fail", {"message": "upstream returned 502"}, name="sync invoices")["id"], ("error",)
    )
    cancelled = create_job(server, "sleep", {"seconds": 60}, name="reindex search")
    server.http.post(f"/jobs/{cancelled['id']}/cancel")
    create_job(server, "sleep", {"seconds": 40, "steps": 40}, name="train model")
    running = create_job(server, "sleep", {"seconds": 8, "steps": 16}, name="resize images")
    server.wait_for(lambda: get_job(server, running["id"])["progress"] >= 0.35, timeout=10)
    DOCS.mkdir(exist_ok=True)
    for viewport, path in ((LAPTOP, DOCS / "board.png"), (PHONE, DOCS / "board-phone.png")):
        ctx = browser.new_context(viewport=viewport, device_scale_factor=1, color_scheme="light")
        try:
            page = open_board(ctx, server)
            expect(state(page)).to_have_text("live")
            expect(page.locator("#job-rows tr")).to_have_count(6)
            # What the README's caption says the picture shows.
            for status, count in (("in_progress", 2), ("completed", 2), ("cancelled", 1), ("error", 1)):
                expect(page.locator(f'[data-count="{status}"]')).to_have_text(str(count))
            # Readable without sideways scrolling, phone included.
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(path), full_page=viewport is PHONE)
        finally:
            ctx.close()
    assert (DOCS / "board.png").stat().st_size > 10_000
