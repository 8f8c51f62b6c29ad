"""Settings: defaults from the spec, and bad values name the variable.

That gunicorn refuses to start with a bad value is in
``tests/integration/test_settings_startup.py``.
"""

from __future__ import annotations

import pytest

from server.settings import ConfigError, Settings


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


@pytest.mark.parametrize("value", [" ", "   ", "\t", " \n "])
def test_an_api_token_of_only_whitespace_stops_start_up(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"API_TOKEN": value})
    assert info.value.name == "API_TOKEN" and info.value.value == value
    assert "API_TOKEN" in str(info.value) and "whitespace" in str(info.value)
    with pytest.raises(ConfigError, match="API_TOKEN"):
        Settings(api_token=value)


def test_an_empty_api_token_is_unset_and_a_padded_one_is_stripped() -> None:
    assert Settings.from_env({"API_TOKEN": ""}).api_token == ""
    assert Settings.from_env({"API_TOKEN": "  s3cret \n"}).api_token == "s3cret"
    assert Settings.from_env({"API_TOKEN": "a b"}).api_token == "a b"
