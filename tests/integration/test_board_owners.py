"""Jobs with owners, end to end: two users' boards on one scaled-out server.

One gunicorn with two workers on a real ``redis-server`` (``STREAM_AUTH=optional``,
so anonymous streams may connect too) is shared by the module, and so are
alice's and bob's browsers (a context each, signed in by the ``jobstream_token``
cookie, two tabs each). Jobs are made by the users' tokens, by the operator
key (unowned: everyone's) and from the board's own form. Absence is asserted
only after something later has arrived: every job event goes through one
Redis stream in one order, so a reader that got a later event would have got
the earlier one too. ``server.http`` carries the operator key in this module.
The last test signs another user in on a browser whose shared stream is open.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.test_board_tabs import StreamGate
from tests.support import redis as redis_support
from tests.support.board import FAST_RECONNECT, LAPTOP, active_streams, create_job, mode_of, open_board, row, state
from tests.support.board import wait_job as wait_status
from tests.support.board_users import User, rows_seen, sign_in, streams_by_sub, streams_on_every_worker
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient
from tests.support.tokens import SECRET

API_TOKEN = "operator-key-for-tests"
WORKERS = 2
ALICE, BOB = User.named("alice"), User.named("bob")
QUICK = {"seconds": 0.2, "steps": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not redis_support.available():
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    env = {
        "REDIS_URL": redis.url,
        "WEB_CONCURRENCY": str(WORKERS),
        "JWT_SECRET": SECRET,
        "STREAM_AUTH": "optional",
        "API_TOKEN": API_TOKEN,
        **FAST_RECONNECT,
    }
    server = ServerProcess(tmp_path_factory.mktemp("owners"), env=env)
    try:
        server.start()
        server.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
        yield server
    finally:
        server.stop(timeout=10)
        redis.stop()


def signed_in_tabs(browser: Browser, server: ServerProcess, user: User, tabs: int, mode: str) -> list[Page]:
    context = browser.new_context(viewport=LAPTOP)
    context.set_default_timeout(15_000)
    sign_in(context, server, user)
    pages = [open_board(context, server, mode=mode) for _ in range(tabs)]
    for page in pages:
        expect(state(page)).to_have_text("live")
        expect(page.locator("#who")).to_have_text(f"Signed in as {user.sub}")
    return pages


@pytest.fixture(scope="module")
def boards(browser: Browser, server: ServerProcess) -> Iterator[dict[str, list[Page]]]:
    """alice's and bob's browsers, two tabs each sharing one SharedWorker stream."""
    tabs = {user.sub: signed_in_tabs(browser, server, user, 2, "auto") for user in (ALICE, BOB)}
    yield tabs
    for pages in tabs.values():
        pages[0].context.close()


def expect_status(pages: list[Page], job_id: str, status: str) -> None:
    for page in pages:
        expect(row(page, job_id).locator(".badge")).to_have_text(status)


def assert_never_shown(pages: list[Page], *job_ids: str) -> None:
    for page in pages:
        shown = rows_seen(page).intersection(job_ids)
        assert not shown, f"{page.url} (#who: {page.locator('#who').text_content()}) showed {sorted(shown)}"
        for job_id in job_ids:
            expect(row(page, job_id)).to_have_count(0)


def has_status(stream: SSEClient, job_id: str, status: str) -> bool:
    return any(e.json()["id"] == job_id and e.json()["status"] == status for e in stream.of("job"))


def anonymous_job_ids(stream: SSEClient) -> set[str]:
    """Every job an anonymous stream was shown, live or in a snapshot: all unowned."""
    jobs = [e.json() for e in stream.of("job")] + [j for e in stream.of("snapshot") for j in e.json()["jobs"]]
    assert all(job["owner"] is None for job in jobs), [job["owner"] for job in jobs]
    return {job["id"] for job in jobs}


@pytest.mark.timeout(60)
def test_each_user_sees_their_own_jobs_and_unowned_ones_live_over_one_stream_per_browser(
    server: ServerProcess, boards: dict[str, list[Page]]
) -> None:
    alice, bob = boards["alice"], boards["bob"]
    assert {mode_of(p) for p in alice + bob} == {"worker"}
    alices = ALICE.create_job(server, "sleep", QUICK, name="alice's")
    bobs = BOB.create_job(server, "sleep", QUICK, name="bob's")
    assert (alices["owner"], bobs["owner"]) == ("alice", "bob")
    expect_status(alice, alices["id"], "completed")
    expect_status(bob, bobs["id"], "completed")
    # Created after both finished: once it shows, the other user's job had its chance to.
    unowned = create_job(server, "sleep", QUICK, name="everyone's")
    assert unowned["owner"] is None
    expect_status(alice + bob, unowned["id"], "completed")
    assert_never_shown(alice, bobs["id"])
    assert_never_shown(bob, alices["id"])
    assert streams_by_sub(server, WORKERS) == {"alice": 1, "bob": 1}
    assert active_streams(server) == 2


@pytest.mark.timeout(60)
def test_a_resume_by_last_event_id_brings_each_user_only_their_own_missed_jobs(
    browser: Browser, server: ServerProcess
) -> None:
    # Web Locks mode: the leader tab holds the EventSource, which context.route
    # can hold back (a SharedWorker's cannot). Closing the leader hands the
    # stream to the next tab, whose resume waits until the jobs are done.
    tabs = {user: signed_in_tabs(browser, server, user, 3, "locks") for user in (ALICE, BOB)}
    try:
        survivors: dict[str, list[Page]] = {}
        gates = []
        for user, pages in tabs.items():
            before = user.create_job(server, "fail", {"message": "before"})
            expect_status(pages, before["id"], "error")  # every tab has a last event id
            for page in pages:
                page.evaluate("() => { window.resets = 0; window.jobstream.on('reset', () => window.resets++); }")
            gates.append(StreamGate(pages[0].context, only_resumes=True))
            leader = next(p for p in pages if mode_of(p) == "leader")
            survivors[user.sub] = [p for p in pages if p is not leader]
            leader.close()
        for gate, pages in zip(gates, survivors.values(), strict=True):
            gate.wait_held(pages[0], timeout=5)

        alices = ALICE.create_job(server, "sleep", QUICK, name="alice's, missed")
        bobs = BOB.create_job(server, "fail", {"message": "bob's, missed"})
        wait_status(server, alices["id"], ("completed",))
        wait_status(server, bobs["id"], ("error",))
        unowned = create_job(server, "fail", {"message": "everyone's, missed"})
        wait_status(server, unowned["id"], ("error",))
        for pages in survivors.values():
            assert_never_shown(pages, alices["id"], bobs["id"], unowned["id"])  # nobody could have seen them yet
        logged = len(server.log_records())
        for gate in gates:
            gate.release()

        expect_status(survivors["alice"], alices["id"], "completed")
        expect_status(survivors["bob"], bobs["id"], "error")
        expect_status(survivors["alice"] + survivors["bob"], unowned["id"], "error")
        assert_never_shown(survivors["alice"], bobs["id"])
        assert_never_shown(survivors["bob"], alices["id"])
        for page in survivors["alice"] + survivors["bob"]:
            assert page.evaluate("window.resets") == 0  # resumed, not started over
        opened = [r for r in server.log_records()[logged:] if r.get("event") == "stream_opened"]
        assert sorted((r["sub"], bool(r["last_event_id"])) for r in opened) == [("alice", True), ("bob", True)]
    finally:
        for pages in tabs.values():
            pages[0].context.close()


@pytest.mark.timeout(30)
def test_the_jobs_api_answers_404_for_another_users_job_and_bob_cannot_cancel_it(server: ServerProcess) -> None:
    alices = ALICE.create_job(server, "sleep", {"seconds": 30, "steps": 60}, name="alice's long one")
    bobs = BOB.create_job(server, "fail", {"message": "bob's"})
    unowned = create_job(server, "fail", {"message": "everyone's"})
    running = wait_status(server, alices["id"], ("in_progress",))
    path = f"/jobs/{alices['id']}"
    for via in ("bearer", "cookie"):
        with BOB.http(server, via) as bob, ALICE.http(server, via) as alice:
            assert bob.get(path).status_code == 404, via
            assert bob.get(path).json() == {"error": f"no job {alices['id']!r}"}
            assert alice.get(path).status_code == 200, via
            assert alice.get(path).json()["owner"] == "alice"
            cancel = bob.post(f"{path}/cancel", json={})
            assert cancel.status_code == 404, via
            listed = {job["id"] for job in bob.get("/jobs").json()["jobs"]}
            assert {bobs["id"], unowned["id"]} <= listed and alices["id"] not in listed, via
    assert httpx.get(server.url(path), timeout=10).status_code == 404  # anonymous

    # Still running: newer progress, never a cancel.
    later = server.wait_for(lambda: (j := server.http.get(path).json())["version"] > running["version"] + 1 and j)
    assert later["status"] == "in_progress" and later["progress"] > running["progress"]
    with SSEClient(server.port, params=[("topic", "jobs/*")], headers=BOB.headers("cookie")).open() as bob_stream:
        (snapshot,) = bob_stream.wait_events(1, event="snapshot")
    shown = {job["id"] for job in snapshot.json()["jobs"]}
    assert {bobs["id"], unowned["id"]} <= shown and alices["id"] not in shown
    with ALICE.http(server) as alice:
        assert alice.post(f"{path}/cancel", json={}).status_code == 200
    assert wait_status(server, alices["id"], ("cancelled",))["owner"] == "alice"


@pytest.mark.timeout(60)
def test_anonymous_streams_on_every_worker_get_no_owned_job_live_or_in_replay(server: ServerProcess) -> None:
    earlier = ALICE.create_job(server, "fail", {"message": "before the streams"})
    wait_status(server, earlier["id"], ("error",))
    topics = [("topic", "jobs/*")]
    streams = streams_on_every_worker(server, lambda: SSEClient(server.port, params=topics, timeout=15), WORKERS)
    replays: list[SSEClient] = []
    try:
        for stream in streams:
            stream.wait_events(1, event="snapshot")
        start = streams[0].of("snapshot")[0].id
        assert start is not None
        alices = ALICE.create_job(server, "sleep", QUICK)
        bobs = BOB.create_job(server, "fail", {"message": "bob's"})
        wait_status(server, alices["id"], ("completed",))
        wait_status(server, bobs["id"], ("error",))
        unowned = create_job(server, "fail", {"message": "everyone's"})
        owned = {earlier["id"], alices["id"], bobs["id"]}
        for stream in streams:
            stream.wait(lambda s: has_status(s, unowned["id"], "error"))
            assert anonymous_job_ids(stream).isdisjoint(owned)

        def replay() -> SSEClient:
            return SSEClient(server.port, params=topics, headers={"Last-Event-ID": start}, timeout=15)

        replays = streams_on_every_worker(server, replay, WORKERS)
        for again in replays:
            again.wait(lambda s: has_status(s, unowned["id"], "error"))
            assert again.of("reset") == [] and again.of("snapshot") == []  # a replay, not a fresh start
            assert anonymous_job_ids(again).isdisjoint(owned)
    finally:
        for stream in streams + replays:
            stream.close()


@pytest.mark.timeout(30)
def test_a_job_started_from_alices_board_is_hers_and_reaches_only_her_tabs(
    server: ServerProcess, boards: dict[str, list[Page]]
) -> None:
    first, other = boards["alice"]
    first.select_option("#job-type", "sleep")
    first.fill("#job-params", '{"seconds": 0.3, "steps": 3}')
    first.fill("#job-name", "started on alice's board")
    first.click("#start-button")
    expect(first.locator("#form-message")).to_have_text("Started started on alice's board.")
    job_id = first.locator("#job-rows tr", has_text="started on alice's board").get_attribute("data-job-id")
    assert job_id
    assert server.http.get(f"/jobs/{job_id}").json()["owner"] == "alice"
    expect_status([first, other], job_id, "completed")
    unowned = create_job(server, "fail", {"message": "after alice's"})
    expect_status(boards["bob"], unowned["id"], "error")
    assert_never_shown(boards["bob"], job_id)


@pytest.mark.timeout(30)
def test_a_tab_opened_after_another_user_signed_in_shows_only_the_new_users_jobs(
    browser: Browser, server: ServerProcess
) -> None:
    # The same browser, alice's tab still open: her web app signs her out and
    # bob in (a new cookie), and bob opens the board.
    (alice_tab,) = signed_in_tabs(browser, server, ALICE, 1, "auto")
    context = alice_tab.context
    try:
        context.clear_cookies()
        sign_in(context, server, BOB)
        bob_tab = open_board(context, server)
        expect(state(bob_tab)).to_have_text("live")
        expect(bob_tab.locator("#who")).to_have_text("Signed in as bob")
        alices = ALICE.create_job(server, "fail", {"message": "alice's, after she signed out"})
        bobs = BOB.create_job(server, "fail", {"message": "bob's"})
        wait_status(server, alices["id"], ("error",))
        wait_status(server, bobs["id"], ("error",))
        unowned = create_job(server, "fail", {"message": "everyone's"})
        expect_status([bob_tab], unowned["id"], "error")
        assert_never_shown([bob_tab], alices["id"])
        expect_status([bob_tab], bobs["id"], "error")
    finally:
        context.close()
