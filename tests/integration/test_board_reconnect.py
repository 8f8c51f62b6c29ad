"""The job board in a real browser: server restarts, refusals and crashes.

Debian's headless Chromium driven by Playwright; each test starts its own
gunicorn. The restart test must be sure the page learns of the changes only
by resuming from its last event id: the page's EventSource lives in the
SharedWorker, which Playwright cannot route, so a long ``retry:`` holds the
resume back instead.
"""

from __future__ import annotations

import itertools
import signal
from datetime import datetime
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

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
from tests.support.sse import SSEClient


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
