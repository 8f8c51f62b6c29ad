"""Which peers may tell the app who the client is: ``FORWARDED_ALLOW_IPS`` and ``TRUSTED_PROXIES``.

Trust model: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are plain request
headers that anyone can send. They are believed only when both hold:

* the TCP peer (``REMOTE_ADDR``) is one of the proxies: an address or network
  in ``FORWARDED_ALLOW_IPS`` (``*``: any peer, for when the network alone
  guarantees that only the proxies reach gunicorn), and
* only the right-most ``TRUSTED_PROXIES`` entries are taken, the ones those
  proxies appended (werkzeug's ``ProxyFix``); what the client itself put in
  front of them is ignored.

A client that reaches gunicorn directly, past the proxies, is then seen at
its own address: it cannot dodge ``STREAM_MAX_CONNECTIONS_PER_IP`` or put a
made-up address into ``/admin/clients`` and the logs. A peer that is not an
IP address (a Unix socket) is not a proxy unless ``*`` says so. ``Host`` and
the path prefix are never taken from headers.

gunicorn reads the same variable for its own ``wsgi.url_scheme`` handling
(``forwarded_allow_ips``); gunicorn.conf.py hands it the same value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ANY = "*"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...] | None:
    """The networks of ``FORWARDED_ALLOW_IPS`` entries; ``None`` for ``*`` (every peer)."""
    entries = tuple(entries)
    if ANY in entries:
        return None
    return tuple(ipaddress.ip_network(entry) for entry in entries)


class TrustedProxies:
    """WSGI middleware: ``ProxyFix`` with ``hops`` for requests from ``allow``'s peers only.

    Outermost, in front of the stream fast path, which reads ``REMOTE_ADDR``
    too. One address check per request (cached), nothing per event.
    """

    def __init__(self, app: WSGIApp, hops: int, allow: Iterable[str]) -> None:
        self.app = app
        self.networks = parse_networks(allow)
        # x_host, x_port, x_prefix stay 0: Host and prefix are never taken from headers.
        self.fixed = ProxyFix(app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0)
        self.is_proxy = lru_cache(maxsize=256)(self._is_proxy)

    def _is_proxy(self, remote_addr: str) -> bool:
        if self.networks is None:
            return True
        try:
            address = ipaddress.ip_address(remote_addr)
        except ValueError:
            return False  # not an IP address (a Unix socket, or nothing)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack socket
        return any(address in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.is_proxy(environ.get("REMOTE_ADDR") or ""):
            return self.fixed(environ, start_response)  # type: ignore[arg-type]
        return self.app(environ, start_response)
