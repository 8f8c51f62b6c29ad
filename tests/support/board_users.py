"""Signed-in users for the job board: their tokens, their requests, their tabs.

A user's web app signs them in by setting the ``jobstream_token`` cookie,
which the board's ``/stream``, ``/me`` and ``POST /jobs`` all send; scripts
send the same token as ``Authorization: Bearer``. ``sign_in`` also makes every
tab of the context remember each job row it ever showed, so a test can say a
job never appeared, not only that it is not on screen now.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Page

from tests.support.server import ServerProcess
from tests.support.sse import SSEClient
from tests.support.tokens import mint

COOKIE = "jobstream_token"
# Every job row any tab added, including rows a later snapshot removed.
_REMEMBER_ROWS = """
if (!window.rowsSeen) {
  window.rowsSeen = new Set();
  new MutationObserver((records) => {
    for (const record of records)
      for (const node of record.addedNodes) if (node.dataset && node.dataset.jobId) window.rowsSeen.add(node.dataset.jobId);
  }).observe(document, { childList: true, subtree: true });
}
"""


@dataclass(frozen=True)
class User:
    """A signed-in user: a JWT that may read every job topic (the board's ``jobs/*``)."""

    sub: str
    token: str

    @classmethod
    def named(cls, sub: str) -> User:
        return cls(sub, mint(sub=sub, subscribe=["jobs/*"]))

    def headers(self, via: str = "bearer") -> dict[str, str]:
        """How a request carries the token: ``bearer`` (a script) or ``cookie`` (the browser)."""
        return {"Authorization": f"Bearer {self.token}"} if via == "bearer" else {"Cookie": f"{COOKIE}={self.token}"}

    def http(self, server: ServerProcess, via: str = "bearer") -> httpx.Client:
        """A client of its own: ``server.http`` may carry another token."""
        return httpx.Client(base_url=server.url(), headers=self.headers(via), timeout=10)

    def create_job(self, server: ServerProcess, type_: str, params: dict[str, Any], name: str | None = None) -> Any:
        body: dict[str, Any] = {"type": type_, "params": params, **({"name": name} if name else {})}
        with self.http(server) as http:
            response = http.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()


def sign_in(context: BrowserContext, server: ServerProcess, user: User) -> None:
    """Set the user's cookie for the server, as the user's web app would (again: another user)."""
    context.add_cookies([{"name": COOKIE, "value": user.token, "url": server.url("/")}])
    context.add_init_script(_REMEMBER_ROWS)


def rows_seen(page: Page) -> set[str]:
    return set(page.evaluate("[...window.rowsSeen]"))


def streams_by_sub(server: ServerProcess, workers: int, timeout: float = 10) -> Counter[str | None]:
    """Open streams by their token's ``sub``, over every worker. With Redis,
    ``/admin/clients`` lists the fleet, other workers' entries up to a refresh
    old: each worker's own streams are taken from its own answer (live), so
    ask on new connections until each has answered."""
    listings: dict[int, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    while len(listings) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(listings)} answered /admin/clients"
        with httpx.Client(base_url=server.url(), headers=server.http.headers, timeout=5) as http:
            body = http.get("/admin/clients").json()
        pid = body["worker_pid"]
        listings[pid] = [c for c in body["clients"] if c.get("worker_pid", pid) == pid]
    return Counter(c["sub"] for clients in listings.values() for c in clients)


def streams_on_every_worker(
    server: ServerProcess, make: Callable[[], SSEClient], workers: int, batch: int = 6, tries: int = 5
) -> list[SSEClient]:
    """Open streams in batches (all connected before any is read, so the
    workers' accept loops share them) until every worker serves some."""
    opened: list[SSEClient] = []
    seen = len([r for r in server.log_records() if r.get("event") == "stream_opened"])
    for _ in range(tries):
        clients = [make().connect() for _ in range(batch)]
        opened += clients
        for client in clients:
            client.read_headers()
            assert client.status == 200, client.raw
        records = server.wait_for(partial(_opened_since, server, seen, len(opened)))
        if len({r["pid"] for r in records}) >= workers:
            return opened
    for client in opened:
        client.close()
    raise AssertionError(f"{len(opened)} streams all went to one worker")


def _opened_since(server: ServerProcess, seen: int, count: int) -> list[dict[str, Any]] | None:
    records = [r for r in server.log_records() if r.get("event") == "stream_opened"][seen:]
    return records if len(records) >= count else None
