"""A real ``gunicorn -k gevent`` in a subprocess on an ephemeral port.

Modelled on Werkzeug's ``DevServerClient``: logs go to a file under the
test's tmp_path, readiness is a poll of ``/health``, and ``wait_for_log``
waits for a line instead of sleeping.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
_LISTEN = re.compile(r"Listening at: (https?)://127\.0\.0\.1:(\d+)")

# Fast defaults for tests; each test overrides what it exercises.
TEST_ENV = {
    "STREAM_KEEPALIVE_INTERVAL": "5",
    "STREAM_CLEANUP_INTERVAL": "5",
    "STREAM_SEND_TIMEOUT": "2",
    "LOG_LEVEL": "info",
}


def refuse_in_unit_tests(what: str) -> None:
    """Fail a test under tests/unit that starts a real server: the unit run must start none."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "")
    if test.startswith("tests/unit/"):
        raise RuntimeError(f"{test.rsplit(' ', 1)[0]} starts {what}: move it to tests/integration/")


class ServerProcess:
    def __init__(
        self, workdir: Path, env: dict[str, str] | None = None, args: list[str] | None = None, port: int = 0
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.env = {**os.environ, **TEST_ENV, "JOBS_DB": str(workdir / "jobs.db"), **(env or {})}
        self.env.pop("PYTEST_CURRENT_TEST", None)
        self.args = args or []
        self.requested_port = port
        self.port = 0
        self.scheme = "http"  # "https" when gunicorn serves TLS itself (--certfile)
        # What the HTTPS client trusts: the test's own CA file, or an SSLContext.
        self.verify: Any = True
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._http: httpx.Client | None = None

    # -- process -----------------------------------------------------------

    def start(self, timeout: float = 20.0, wait_healthy: bool = True) -> ServerProcess:
        refuse_in_unit_tests("gunicorn")
        self._log_file = open(self.log_path, "ab")
        self._log_offset = self.log_path.stat().st_size
        cmd = [
            sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
            "--bind", f"127.0.0.1:{self.requested_port}", *self.args, "app:app",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            match = _LISTEN.search(self.log(since_start=True))
            if match:
                self.scheme, self.port = match.group(1), int(match.group(2))
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"gunicorn did not listen within {timeout}s:\n{self.log()[-4000:]}")
        if wait_healthy:
            self.wait_healthy(deadline - time.monotonic())
        return self

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self.http.get("/health", timeout=2).status_code in (200, 503):
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"server not healthy within {timeout}s ({last}):\n{self.log()[-4000:]}")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.close_http()
        self.proc.send_signal(sig)

    def close_http(self) -> None:
        """Drop the idle keep-alive connection: gunicorn waits for it on shutdown."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._http is not None:
            self._http.close()
            self._http = None
        return self.proc.returncode

    def discard(self, timeout: float = 10.0) -> int | None:
        """Stop after a test: gunicorn's quick shutdown (SIGQUIT). A SIGTERM
        waits for the gevent worker's 1 s tick, and another while a client is
        still connected: about 1-2 s per server, minutes over the suite."""
        return self.stop(signal.SIGQUIT, timeout)

    def kill(self) -> None:
        """SIGKILL the master and its workers, as a crash would."""
        assert self.proc is not None
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        try:
            out = subprocess.run(
                ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
            ).stdout
        except FileNotFoundError:
            return []
        return [int(p) for p in out.split()]

    # -- HTTP --------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    @property
    def http(self) -> httpx.Client:
        """A keep-alive client (building one per call costs ~50 ms of TLS set-up)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url(), timeout=10, verify=self.verify)
        return self._http

    def health(self) -> dict[str, Any]:
        return self.http.get("/health").json()  # type: ignore[no-any-return]

    def publish(self, topic: str, data: Any, event: str | None = None) -> str:
        body: dict[str, Any] = {"topic": topic, "data": data}
        if event is not None:
            body["event"] = event
        response = self.http.post("/events", json=body)
        assert response.status_code == 202, response.text
        return response.json()["id"]  # type: ignore[no-any-return]

    def wait_for(self, predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            time.sleep(interval)

    # -- logs --------------------------------------------------------------

    def log(self, since_start: bool = False) -> str:
        text = self.log_path.read_bytes()
        if since_start:
            text = text[self._log_offset :]
        return text.decode("utf-8", "replace")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass
        return records

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        self.wait_for(lambda: text in self.log(), timeout)
