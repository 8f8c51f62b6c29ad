"""``HOST``: the address gunicorn listens on (``Settings.bind``)."""

from __future__ import annotations

import pytest

from server.settings import ConfigError, Settings


def test_the_default_is_loopback_only() -> None:
    settings = Settings.from_env({})
    assert settings.host == "127.0.0.1" and settings.bind == "127.0.0.1:8000"
    assert settings.public()["HOST"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "bind"),
    [
        ("0.0.0.0", "0.0.0.0:8000"),
        (" 10.1.2.3 ", "10.1.2.3:8000"),
        ("::", "[::]:8000"),
        ("::1", "[::1]:8000"),
        ("[::1]", "[::1]:8000"),
        ("fe80::1%eth0", "[fe80::1%eth0]:8000"),
        ("localhost", "localhost:8000"),
        ("api.internal", "api.internal:8000"),
        ("my-host-2", "my-host-2:8000"),
    ],
)
def test_an_address_or_host_name_is_bound_with_the_port(host: str, bind: str) -> None:
    assert Settings.from_env({"HOST": host}).bind == bind
    assert Settings.from_env({"HOST": host, "PORT": "9001"}).bind == bind.replace(":8000", ":9001")


@pytest.mark.parametrize(
    "host",
    [
        "256.1.1.1",
        "1.2.3",  # a last label of digits: a broken IPv4 address, not a name
        "127.0.0.1:8000",  # the port has its own variable
        "[127.0.0.1]",
        "[localhost]",
        "http://example.com",
        "-leading.example",
        "trailing-.example",
        "a..b",
        "two words",
        "x" * 64,
        "::1::",
    ],
)
def test_anything_else_is_a_config_error_naming_host(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"HOST": host})
    assert caught.value.name == "HOST" and caught.value.value == host
    assert str(caught.value).startswith(f"invalid setting HOST={host!r}")
