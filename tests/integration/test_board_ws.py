"""The board over a WebSocket (``/?transport=ws``) in real Chromium: still one
connection for all of a browser's tabs, jobs live, background by one message."""

from __future__ import annotations

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.conftest import StartServer
from tests.integration.test_board_background import EMULATE_VISIBILITY
from tests.support.board import create_job, row, state, wait_job
from tests.support.server import ServerProcess

API_TOKEN = "board-ws-operator"


def _tab(context: BrowserContext, server: ServerProcess) -> Page:
    page = context.new_page()
    page.goto(server.url("/?transport=ws"), wait_until="commit")
    expect(state(page)).to_have_text("live")
    return page


def _ws_clients(server: ServerProcess) -> list[dict[str, str]]:
    clients = server.http.get("/admin/clients").json()["clients"]
    return [{"transport": c["transport"], "qos": c["qos"]} for c in clients]


@pytest.mark.timeout(60)
def test_tabs_share_one_websocket_and_follow_jobs_and_visibility(
    start_server: StartServer, context: BrowserContext
) -> None:
    server = start_server({"API_TOKEN": API_TOKEN, "STREAM_BACKGROUND_INTERVAL": "2"})
    server.http.headers["Authorization"] = f"Bearer {API_TOKEN}"
    context.add_init_script(EMULATE_VISIBILITY)
    tabs = [_tab(context, server), _tab(context, server)]
    server.wait_for(lambda: _ws_clients(server) == [{"transport": "ws", "qos": "foreground"}])
    job = create_job(server, "sleep", {"seconds": 0.5, "steps": 5}, name="over a socket")
    wait_job(server, job["id"], ("completed",))
    for tab in tabs:
        expect(row(tab, job["id"]).locator(".badge")).to_have_text("completed")
    for tab in tabs:
        tab.evaluate("() => window.__setHidden(true)")
    server.wait_for(lambda: _ws_clients(server) == [{"transport": "ws", "qos": "background"}])
    tabs[0].evaluate("() => window.__setHidden(false)")
    server.wait_for(lambda: _ws_clients(server) == [{"transport": "ws", "qos": "foreground"}])
    later = create_job(server, "fail", {"message": "still live"})
    for tab in tabs:
        expect(row(tab, later["id"]).locator(".badge")).to_have_text("error")
    assert server.health()["stream"]["by_transport"] == {"sse": 0, "ws": 1}  # the same one socket throughout
