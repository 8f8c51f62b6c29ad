"""A bad setting stops gunicorn before any worker boots, with one line naming it.

The settings' parsing alone is tested in ``tests/unit/test_settings.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.support.server import ROOT


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAM_CLIENT_BUFFER", "0"),
        ("STREAM_MAX_CONNECTIONS", "abc"),
        ("STREAM_KEEPALIVE_INTERVAL", "-1"),
        ("WEB_CONCURRENCY", "2"),
        ("API_TOKEN", "  "),
    ],
)
def test_gunicorn_refuses_to_start_with_a_bad_value(tmp_path: object, name: str, value: str) -> None:
    env = {"PATH": "/usr/bin:/bin", name: value, "JOBS_DB": f"{tmp_path}/jobs.db"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert proc.returncode != 0
    assert time.monotonic() - started < 10
    lines = [line for line in proc.stderr.splitlines() if name in line]
    assert len(lines) == 1, proc.stderr
    record = json.loads(lines[0])
    assert record["variable"] == name and record["value"] == value
    if name == "WEB_CONCURRENCY":
        assert "REDIS_URL" in record["message"]


@pytest.mark.timeout(30)
def test_gunicorn_refuses_a_bad_forwarded_allow_ips(tmp_path: object) -> None:
    # gunicorn reads FORWARDED_ALLOW_IPS itself, and checks it before
    # gunicorn.conf.py runs: its own error line names the value, not the variable.
    env = {"PATH": "/usr/bin:/bin", "FORWARDED_ALLOW_IPS": "10.0.0.1/8", "JOBS_DB": f"{tmp_path}/jobs.db"}
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "10.0.0.1/8" in proc.stderr and "Booting worker" not in proc.stderr
