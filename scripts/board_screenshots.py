"""Regenerate the board pictures in docs/ from a real server and Chromium.

    python -m scripts.board_screenshots            # writes docs/board.png and docs/board-phone.png
    python -m scripts.board_screenshots --out DIR  # somewhere else

Starts ``gunicorn -k gevent`` (``gunicorn.conf.py``, ``app:app``) on an
ephemeral loopback port with a throw-away ``JOBS_DB``, creates a few demo jobs
(two completed, one failed, one cancelled, two in progress: what the README's
caption says), and photographs ``GET /`` with Debian's headless Chromium at
/usr/bin/chromium through Playwright: 1280 x 800 for ``board.png``, the full
page at 390 x 844 for ``board-phone.png``. Nothing is read from or written to
the repository except the two pictures; the tests never write docs/.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from scripts.chromium import CHROMIUM, CHROMIUM_ARGS

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

ROOT = Path(__file__).resolve().parents[1]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
# The caption in README.md describes these counts.
EXPECTED_COUNTS = {"in_progress": 2, "completed": 2, "cancelled": 1, "error": 1}
START_TIMEOUT_SECONDS = 20.0
JOB_TIMEOUT_SECONDS = 10.0
BROWSER_TIMEOUT_MS = 15_000

_LISTEN = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
# Settings the server reads (server/settings.py): none of the caller's may leak
# in, or the picture would depend on a REDIS_URL or API_TOKEN in the shell.
_SETTINGS_PREFIXES = ("STREAM_", "JOBS_")
_SETTINGS = frozenset({"PORT", "WEB_CONCURRENCY", "LOG_LEVEL", "TRUSTED_PROXIES", "API_TOKEN", "REDIS_URL"})

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


@contextmanager
def running_server(workdir: Path) -> Iterator[httpx.Client]:
    """A gunicorn on 127.0.0.1:<ephemeral>; yields a client for it, SIGTERMs it after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES) and k not in _SETTINGS}
    env["JOBS_DB"] = str(workdir / "jobs.db")
    log_path = workdir / "server.log"
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "app:app"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def port() -> int | None:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            match = _LISTEN.search(log_path.read_text(errors="replace"))
            return int(match.group(1)) if match else None

        base = f"http://127.0.0.1:{wait_until('gunicorn listening', port, START_TIMEOUT_SECONDS)}"
        with httpx.Client(base_url=base, timeout=10) as client:

            def healthy() -> bool:
                try:
                    return client.get("/health").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until("server healthy", healthy, START_TIMEOUT_SECONDS)
            yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def create_job(http: httpx.Client, type_: str, params: dict[str, Any], name: str) -> str:
    response = http.post("/jobs", json={"type": type_, "params": params, "name": name})
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


def wait_job(http: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool]) -> None:
    wait_until(f"job {job_id}", lambda: done(http.get(f"/jobs/{job_id}").json()), JOB_TIMEOUT_SECONDS)


def create_demo_jobs(http: httpx.Client) -> None:
    """Two completed, one failed, one cancelled, two in progress (one about a third done)."""
    for name, params in (("nightly export", {"seconds": 0.4, "steps": 4}), ("thumbnails", {"seconds": 0.2})):
        wait_job(http, create_job(http, "sleep", params, name), lambda j: j["status"] == "completed")
    failed = create_job(http, "fail", {"message": "upstream returned 502"}, "sync invoices")
    wait_job(http, failed, lambda j: j["status"] == "error")
    cancelled = create_job(http, "sleep", {"seconds": 60}, "reindex search")
    http.post(f"/jobs/{cancelled}/cancel", json={}).raise_for_status()
    wait_job(http, cancelled, lambda j: j["status"] == "cancelled")
    create_job(http, "sleep", {"seconds": 40, "steps": 40}, "train model")
    running = create_job(http, "sleep", {"seconds": 8, "steps": 16}, "resize images")
    wait_job(http, running, lambda j: j["progress"] >= 0.35)


def photograph(base_url: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            for viewport, path in ((DESKTOP, out / "board.png"), (PHONE, out / "board-phone.png")):
                context = browser.new_context(viewport=viewport, device_scale_factor=1, color_scheme="light")
                context.set_default_timeout(BROWSER_TIMEOUT_MS)
                try:
                    page = context.new_page()
                    page.goto(f"{base_url}/")
                    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
                    expect(page.locator("#job-rows tr")).to_have_count(sum(EXPECTED_COUNTS.values()))
                    for status, count in EXPECTED_COUNTS.items():
                        expect(page.locator(f'[data-count="{status}"]')).to_have_text(str(count))
                    width = page.evaluate("document.documentElement.scrollWidth")
                    if width > viewport["width"]:
                        raise RuntimeError(
                            f"{path.name}: the page is {width}px wide in a {viewport['width']}px viewport"
                        )
                    page.screenshot(path=str(path), full_page=viewport is PHONE)
                    written.append(path)
                finally:
                    context.close()
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="directory for the pictures (default: docs/)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        parser.error(f"{CHROMIUM} is not installed (apt-get install chromium)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="board-screenshots-") as tmp, running_server(Path(tmp)) as http:
        create_demo_jobs(http)
        for path in photograph(str(http.base_url).rstrip("/"), out):
            print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
