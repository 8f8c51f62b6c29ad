"""The job board in a real browser: the library's pure parts, rendering, the form, screenshots.

Debian's headless Chromium driven by Playwright, against one shared gunicorn
(the screenshots start their own, so the job counts are exact).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, ViewportSize, expect

from tests.conftest import StartServer
from tests.support.board import LAPTOP, create_job, get_job, open_board, row, state, wait_job
from tests.support.server import ServerProcess

PHONE: ViewportSize = {"width": 390, "height": 844}


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
def test_screenshots_of_the_board_with_running_and_finished_jobs(
    start_server: StartServer, browser: Browser, tmp_path: Path
) -> None:
    server = start_server()
    for name, params in (("nightly export", {"seconds": 0.4, "steps": 4}), ("thumbnails", {"seconds": 0.2})):
        wait_job(server, create_job(server, "sleep", params, name=name)["id"], ("completed",))
    wait_job(
        server, create_job(server, "fail", {"message": "upstream returned 502"}, name="sync invoices")["id"], ("error",)
    )
    cancelled = create_job(server, "sleep", {"seconds": 60}, name="reindex search")
    server.http.post(f"/jobs/{cancelled['id']}/cancel", json={})
    create_job(server, "sleep", {"seconds": 40, "steps": 40}, name="train model")
    running = create_job(server, "sleep", {"seconds": 8, "steps": 16}, name="resize images")
    server.wait_for(lambda: get_job(server, running["id"])["progress"] >= 0.35, timeout=10)
    # Into tmp_path: the pictures in docs/ come from python -m scripts.board_screenshots.
    for viewport, path in ((LAPTOP, tmp_path / "board.png"), (PHONE, tmp_path / "board-phone.png")):
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
    assert (tmp_path / "board.png").stat().st_size > 10_000
