"""Forwarded headers are believed only from FORWARDED_ALLOW_IPS peers, and only TRUSTED_PROXIES hops of them.

Against real gunicorn and nginx: ``tests/integration/test_forwarded_trust.py``
and ``tests/integration/test_nginx.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streaming
from app import create_app
from server.proxies import TrustedProxies, parse_networks
from server.settings import ConfigError, Settings
from streaming.transport.fastpath import StreamFastPath

SPOOF = {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7", "HTTP_X_FORWARDED_PROTO": "https"}


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}".encode()]


def seen(allow: tuple[str, ...], peer: str, hops: int = 1, **headers: str) -> str:
    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", "HTTP_HOST": "x", **SPOOF, **headers}
    return b"".join(TrustedProxies(echo, hops, allow)(environ, lambda *a: None)).decode()


@pytest.mark.parametrize(
    ("allow", "peer"),
    [
        (("127.0.0.1", "::1"), "127.0.0.1"),
        (("127.0.0.1", "::1"), "::1"),
        (("10.0.0.0/8",), "10.20.30.40"),
        (("10.0.0.0/8",), "::ffff:10.1.2.3"),  # an IPv4 peer on a dual-stack socket
        (("fd00::/8",), "fd12::1"),
        (("*",), "198.51.100.9"),
        (("*",), ""),
    ],
)
def test_a_proxy_in_the_list_is_believed_for_its_hops(allow: tuple[str, ...], peer: str) -> None:
    assert seen(allow, peer) == "203.0.113.7 https"


@pytest.mark.parametrize(
    ("allow", "peer"),
    [
        (("127.0.0.1", "::1"), "127.0.0.2"),
        (("127.0.0.1", "::1"), "198.51.100.9"),
        (("10.0.0.0/8",), "11.0.0.1"),
        (("10.0.0.0/8",), "::ffff:11.0.0.1"),
        (("fd00::/8",), "fe80::1"),
        (("127.0.0.1",), ""),  # a Unix socket has no address: not a proxy unless "*"
        (("127.0.0.1",), "unix:/run/x.sock"),
        (("127.0.0.1",), "not an address"),
    ],
)
def test_any_other_peer_is_seen_as_itself(allow: tuple[str, ...], peer: str) -> None:
    assert seen(allow, peer) == f"{peer} http"


def test_only_the_right_most_hops_count() -> None:
    # X-Forwarded-Proto has one entry, fewer than 2 hops: the scheme is left alone.
    assert seen(("127.0.0.1",), "127.0.0.1", hops=2) == "6.6.6.6 http"
    # More hops claimed than entries present: ProxyFix leaves the peer as it is.
    assert seen(("127.0.0.1",), "127.0.0.1", hops=3) == "127.0.0.1 http"


def test_the_address_check_is_cached_per_peer() -> None:
    proxies = TrustedProxies(echo, 1, ("10.0.0.0/8",))
    for _ in range(3):
        proxies({"REMOTE_ADDR": "10.0.0.1", "wsgi.url_scheme": "http", **SPOOF}, lambda *a: None)
    assert proxies.is_proxy.cache_info().hits == 2  # type: ignore[attr-defined]


def test_parse_networks() -> None:
    assert parse_networks(["*", "10.0.0.0/8"]) is None
    assert [str(n) for n in parse_networks(["10.0.0.0/8", "::1"]) or ()] == ["10.0.0.0/8", "::1/128"]


def test_the_middleware_is_outermost_so_the_fast_path_sees_the_client(tmp_path: Path) -> None:
    app = create_app(Settings(jobs_db=str(tmp_path / "jobs.db"), trusted_proxies=1))
    try:
        assert isinstance(app.wsgi_app, TrustedProxies)
        assert isinstance(app.wsgi_app.app, StreamFastPath)
        assert app.wsgi_app.networks is not None and [str(n) for n in app.wsgi_app.networks] == [
            "127.0.0.1/32",
            "::1/128",
        ]
    finally:
        streaming.service_of(app).close()
    plain = create_app(Settings(jobs_db=str(tmp_path / "jobs.db")))
    try:
        assert isinstance(plain.wsgi_app, StreamFastPath)  # TRUSTED_PROXIES=0: no header is read
    finally:
        streaming.service_of(plain).close()


def test_forwarded_allow_ips_setting() -> None:
    assert Settings.from_env({}).forwarded_allow_ips == ("127.0.0.1", "::1")
    parsed = Settings.from_env({"FORWARDED_ALLOW_IPS": " 10.0.0.0/8, 192.168.1.7 ,::1,10.0.0.0/8"})
    assert parsed.forwarded_allow_ips == ("10.0.0.0/8", "192.168.1.7", "::1")
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": "  "}).forwarded_allow_ips == ("127.0.0.1", "::1")


@pytest.mark.parametrize("value", ["10.0.0.1/8", "localhost", "10.0.0.0/33", "1.2.3", ",", "*.example"])
def test_a_bad_forwarded_allow_ips_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FORWARDED_ALLOW_IPS": value})
    assert info.value.name == "FORWARDED_ALLOW_IPS" and info.value.value == value
