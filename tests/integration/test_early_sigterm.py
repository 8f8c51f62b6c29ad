"""SIGTERM while the workers are still booting: the master exits by itself.

gunicorn's master installs its signal handlers only once it has spawned the
workers; a SIGTERM that lands before (the orchestrator stopping a container
that just started) must not leave it running, or waiting for workers that
will never be told to stop. Each delay below lands in a different phase:
while Python imports gunicorn, while the master binds, while the workers
import the app and while they start the service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.server import ROOT, TEST_ENV

DELAYS = [0.05, 0.2, 0.5, 1.0]


@pytest.mark.parametrize("delay", DELAYS)
@pytest.mark.timeout(30)
def test_a_sigterm_during_boot_stops_the_master_within_10_s(tmp_path: Path, delay: float) -> None:
    env = {**os.environ, **TEST_ENV, "JOBS_DB": str(tmp_path / "jobs.db"), "WEB_CONCURRENCY": "2"}
    env.pop("PYTEST_CURRENT_TEST", None)
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "app:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(delay)  # the point of the test: a signal at this moment of the boot
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            pytest.fail(
                f"master still running 10 s after SIGTERM at {delay}s:\n{(tmp_path / 'server.log').read_text()}"
            )
    assert _processes_with(f"JOBS_DB={tmp_path}/jobs.db".encode()) == []  # no orphaned worker either


def _processes_with(variable: bytes) -> list[int]:
    """Pids whose environment holds ``variable`` (this test's own JOBS_DB)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if variable in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile, or not ours to read
    return found
