"""Settings: defaults from the spec, and bad values stop start-up."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from server.settings import ConfigError, Settings
from tests.support.server import ROOT


def test_defaults_are_the_spec_values() -> None:
    s = Settings.from_env({})
    assert (s.max_connections, s.client_buffer, s.keepalive_seconds, s.cleanup_seconds) == (1000, 50, 30, 60)
    assert (s.send_timeout_seconds, s.retry_ms, s.port, s.web_concurrency, s.log_level) == (5, 3000, 8000, 1, "info")
    assert (s.history_size, s.reconnect_jitter_ms, s.reject_mode, s.jobs_concurrency) == (1000, 10000, "status", 4)


def test_floats_are_allowed_for_seconds() -> None:
    s = Settings.from_env({"STREAM_KEEPALIVE_INTERVAL": "0.5", "STREAM_SEND_TIMEOUT": "1.25"})
    assert s.keepalive_seconds == 0.5 and s.send_timeout_seconds == 1.25


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAM_MAX_CONNECTIONS", "lots"),
        ("STREAM_MAX_CONNECTIONS", "-1"),
        ("STREAM_CLIENT_BUFFER", "0"),
        ("STREAM_KEEPALIVE_INTERVAL", "-3"),
        ("STREAM_KEEPALIVE_INTERVAL", "0"),
        ("STREAM_SEND_TIMEOUT", "nan"),
        ("STREAM_CLEANUP_INTERVAL", "1e999"),
        ("STREAM_RETRY_MS", "1.5"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "loud"),
        ("STREAM_REJECT_MODE", "maybe"),
        ("STREAM_RECONNECT_JITTER_MS", "100"),
        ("WEB_CONCURRENCY", "3"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({name: value})
    assert info.value.name == name
    assert name in str(info.value)


def test_more_workers_need_redis() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({"WEB_CONCURRENCY": "2"})
    assert Settings.from_env({"WEB_CONCURRENCY": "2", "REDIS_URL": "redis://127.0.0.1:1/0"}).web_concurrency == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAM_CLIENT_BUFFER", "0"),
        ("STREAM_MAX_CONNECTIONS", "abc"),
        ("STREAM_KEEPALIVE_INTERVAL", "-1"),
        ("WEB_CONCURRENCY", "2"),
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
