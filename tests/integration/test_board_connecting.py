"""What the board's jobs area says before it has the server's picture.

An empty table means "no jobs" only once the stream's snapshot said so; until
then the area says it is connecting, and says so differently when it cannot
connect. The stream is held back with ``context.route`` for a tab's own
EventSource, and with a small gating proxy for the SharedWorker's, which
Playwright cannot route.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.conftest import StartServer
from tests.support.browser import launch_browser
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

pytestmark = pytest.mark.integration

CONNECTING = "Connecting…"
NOT_CONNECTING = "Cannot connect to the server yet. Still trying…"
AT_CAPACITY = "The server is at capacity. Retrying…"
NO_JOBS = "No jobs yet. Start one above."
PATIENCE_MS = 5000  # CONNECT_PATIENCE_MS in static/board.js
HOLD_SECONDS = 30.0  # a held stream gives up after this, so no thread outlives a failed test by long


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    for launched in launch_browser():  # skips without /usr/bin/chromium
        yield cast(Browser, launched)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def open_board(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url, wait_until="commit")
    return page


def empty(page: Page) -> Any:
    return page.locator("#empty")


def conn(page: Page) -> Any:
    return page.locator("#conn")


def create_job(server: ServerProcess, type_: str, params: dict[str, Any], name: str) -> Any:
    response = server.http.post("/jobs", json={"type": type_, "params": params, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


class HeldStreams:
    """Holds every ``/stream`` request a page of the context makes, until ``release``."""

    def __init__(self, context: BrowserContext) -> None:
        self.held: list[Route] = []
        self.released = False
        context.route(lambda url: "/stream" in url, self._handle)

    def _handle(self, route: Route) -> None:
        if self.released:
            route.continue_()
        else:
            self.held.append(route)

    def wait_held(self, page: Page, count: int = 1) -> None:
        # Route handlers run only while Playwright waits, so wait through the page.
        for _ in range(500):
            if len(self.held) >= count:
                return
            page.wait_for_timeout(20)
        raise AssertionError(f"{len(self.held)} of {count} /stream requests held within 10 s")

    def release(self) -> None:
        self.released = True
        for route in self.held:
            route.continue_()
        self.held.clear()


class GatedProxy:
    """An HTTP proxy to ``upstream`` that holds ``/stream`` requests until ``release``.

    Every response ends its connection (HTTP/1.0), so no request can slip
    past the gate on a connection kept alive from an earlier one.
    """

    _HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "host"})
    _OWN = frozenset({"server", "date"})  # BaseHTTPRequestHandler.send_response writes its own

    def __init__(self, upstream: ServerProcess) -> None:
        self.requested = threading.Event()
        self._open = threading.Event()
        self._closing = False
        self._client = httpx.Client(base_url=upstream.url(), timeout=httpx.Timeout(10, read=None))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy._forward(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gated-proxy", daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closing = True
        self._open.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        self._client.close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/stream"):
            self.requested.set()
            if not self._open.wait(HOLD_SECONDS) or self._closing:
                return  # the browser sees the connection drop
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in self._HOP}
        try:
            with self._client.stream("GET", handler.path, headers=headers) as upstream:
                handler.send_response(upstream.status_code)
                for key, value in upstream.headers.multi_items():
                    if key.lower() not in self._HOP | self._OWN:
                        handler.send_header(key, value)
                handler.end_headers()
                for chunk in upstream.iter_raw():  # bytes as sent: Content-Encoding still applies
                    handler.wfile.write(chunk)
        except (OSError, httpx.HTTPError):
            return  # the browser or the server went away: nothing to relay to


# -- a tab's own connection ----------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("mode", "modes", "streams"), [("direct", ["direct", "direct"], 2), ("locks", ["follower", "leader"], 1)]
)
def test_board_says_connecting_until_the_snapshot_arrives_empty(
    start_server: StartServer, context: BrowserContext, mode: str, modes: list[str], streams: int
) -> None:
    server = start_server()
    gate = HeldStreams(context)
    pages = [open_board(context, server.url(f"/?mode={mode}")) for _ in modes]
    gate.wait_held(pages[0], count=streams)
    for page in pages:
        expect(conn(page)).to_have_attribute("data-mode", re.compile("^(direct|leader|follower)$"))
    # Either tab may win the lock.
    assert sorted(page.locator("#conn").get_attribute("data-mode") or "" for page in pages) == modes
    for page in pages:
        # Once the script has set the mode, a follower has had the leader's
        # (empty, not yet synced) picture too: still connecting, not "no jobs".
        expect(conn(page)).to_have_attribute("data-state", "connecting")
        expect(empty(page)).to_have_text(CONNECTING)
        expect(empty(page)).to_be_visible()

    gate.release()
    for page in pages:
        expect(conn(page)).to_have_attribute("data-state", "live")
        expect(empty(page)).to_have_text(NO_JOBS)
    job = create_job(server, "fail", {"message": "seen"}, name="first job")
    for page in pages:
        expect(page.locator(f'#job-rows tr[data-job-id="{job["id"]}"] .badge')).to_have_text("error")
        expect(empty(page)).to_be_hidden()


@pytest.mark.timeout(30)
def test_board_that_gets_no_answer_says_it_cannot_connect_then_shows_the_jobs(
    start_server: StartServer, context: BrowserContext
) -> None:
    server = start_server()
    job = create_job(server, "fail", {"message": "made earlier"}, name="made before the board connected")
    gate = HeldStreams(context)
    page = context.new_page()
    page.clock.install()  # the patience timer runs on the page's clock, which the test moves on
    page.goto(server.url("/?mode=direct"), wait_until="commit")
    gate.wait_held(page)
    expect(conn(page)).to_have_attribute("data-mode", "direct")
    expect(empty(page)).to_have_text(CONNECTING)

    page.clock.fast_forward(PATIENCE_MS + 1000)
    expect(empty(page)).to_have_text(NOT_CONNECTING)
    expect(conn(page)).to_have_attribute("data-state", "connecting")  # the status area keeps EventSource's word

    gate.release()
    expect(page.locator(f'#job-rows tr[data-job-id="{job["id"]}"] .badge')).to_have_text("error")
    expect(empty(page)).to_be_hidden()
    expect(conn(page)).to_have_attribute("data-state", "live")


@pytest.mark.timeout(60)
def test_board_refused_at_capacity_says_so_until_it_gets_in(start_server: StartServer, context: BrowserContext) -> None:
    # Keep-alives every second notice the holder leaving soon after it does.
    server = start_server({"STREAM_MAX_CONNECTIONS": "1", "STREAM_KEEPALIVE_INTERVAL": "1"})
    holder = SSEClient(server.port, params=[("topic", "jobs/*")]).open()
    try:
        holder.wait(lambda c: c.comments)
        page = open_board(context, server.url("/"))
        expect(conn(page)).to_have_attribute("data-state", "busy")
        expect(empty(page)).to_have_text(AT_CAPACITY)
    finally:
        holder.close()
    expect(empty(page)).to_have_text(NO_JOBS, timeout=30_000)
    expect(conn(page)).to_have_attribute("data-state", "live")


# -- the SharedWorker's connection ---------------------------------------------


@pytest.mark.timeout(30)
def test_tabs_sharing_a_worker_say_connecting_until_its_snapshot_arrives(
    start_server: StartServer, context: BrowserContext
) -> None:
    server = start_server()
    proxy = GatedProxy(server)
    try:
        pages = [open_board(context, proxy.url("/?mode=worker")) for _ in range(2)]
        assert proxy.requested.wait(10), "the worker did not ask for /stream"
        for page in pages:
            # The worker answers each tab's hello with its picture so far: no
            # jobs, not synced. That must still read as connecting.
            expect(conn(page)).to_have_attribute("data-mode", "worker")
            expect(empty(page)).to_have_text(CONNECTING)

        proxy.release()
        for page in pages:
            expect(conn(page)).to_have_attribute("data-state", "live")
            expect(empty(page)).to_have_text(NO_JOBS)
        late = open_board(context, proxy.url("/?mode=worker"))
        expect(conn(late)).to_have_attribute("data-mode", "worker")
        expect(empty(late)).to_have_text(NO_JOBS)  # joined a synced worker: known to be empty

        job = create_job(server, "fail", {"message": "relayed"}, name="through the worker")
        for page in [*pages, late]:
            expect(page.locator(f'#job-rows tr[data-job-id="{job["id"]}"] .badge')).to_have_text("error")
            expect(empty(page)).to_be_hidden()
    finally:
        proxy.close()
