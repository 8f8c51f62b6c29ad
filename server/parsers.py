"""How a setting's text becomes a value: one parser per kind of setting.

Each parser takes the variable's name and its raw text and returns the value
or raises ``ConfigError`` naming both. Standard library only, like
``server.settings``: ``gunicorn.conf.py`` imports them in the unpatched master.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# HS256 needs a key at least as long as its hash (RFC 7518 section 3.2).
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A setting has a value Jobstream cannot run with."""

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(f"invalid setting {name}={value!r}: {reason}")
        self.name = name
        self.value = value
        self.reason = reason


def number(kind: Callable[[str], T], minimum: float, inclusive: bool) -> Callable[[str, str], T]:
    def parse(name: str, raw: str) -> T:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, f"not a {getattr(kind, '__name__', 'number')}") from None
        if value != value or value in (float("inf"), float("-inf")):  # type: ignore[comparison-overlap]
            raise ConfigError(name, raw, "not a finite number")
        too_small = value < minimum if inclusive else value <= minimum  # type: ignore[operator]
        if too_small:
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise ConfigError(name, raw, f"must be {bound}")
        return value

    return parse


positive_int = number(int, 1, inclusive=True)
non_negative_int = number(int, 0, inclusive=True)
positive_seconds = number(float, 0, inclusive=False)
non_negative_seconds = number(float, 0, inclusive=True)


def port(name: str, raw: str) -> int:
    value = positive_int(name, raw)
    if value > 65535:
        raise ConfigError(name, raw, "must be a TCP port (1-65535)")
    return value


# RFC 1123 host name labels: letters, digits and inner hyphens.
LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def host(name: str, raw: str) -> str:
    """An address to listen on: an IPv4 or IPv6 literal or a host name."""
    value = raw.strip()
    if value.startswith("[") and value.endswith("]"):
        # Brackets, as in a URL, and only around an IPv6 address.
        if ip_version(value[1:-1]) == 6:
            return value[1:-1]
    elif ip_version(value) or is_host_name(value):
        return value
    raise ConfigError(name, raw, "must be an IPv4 or IPv6 address (such as 127.0.0.1, 0.0.0.0 or ::) or a host name")


def ip_version(value: str) -> int | None:
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


def is_host_name(value: str) -> bool:
    labels = value.removesuffix(".").split(".")
    # A last label of digits would be a malformed IPv4 address, not a name.
    return len(value) <= 253 and all(LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(name, raw, f"must be one of {', '.join(choices)}")
        return value

    return parse


def text(name: str, raw: str) -> str:
    return raw.strip()


FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def flag(name: str, raw: str) -> bool:
    value = FLAGS.get(raw.strip().lower())
    if value is None:
        raise ConfigError(name, raw, "must be 1 or 0 (true/false, yes/no, on/off)")
    return value


def csv(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def secret(name: str, raw: str) -> str:
    """A secret: surrounding whitespace is dropped, but one of nothing else is
    a mistake (a stray space in a unit file), not a request to run open."""
    value = raw.strip()
    if not value:
        raise ConfigError(name, raw, "only whitespace; unset it (or set it empty) to run without a token")
    return value


def networks(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated IP addresses and CIDR networks, or ``*``."""
    out: list[str] = []
    for entry in csv(name, raw):
        if entry == "*":
            out.append(entry)
            continue
        try:
            # strict, as gunicorn's: 10.0.0.1/8 (host bits set) is a typo, not 10.0.0.0/8.
            network = ipaddress.ip_network(entry)
        except ValueError as exc:
            raise ConfigError(name, raw, f"{entry!r} is not an IP address, a CIDR network or * ({exc})") from None
        out.append(str(network.network_address) if network.num_addresses == 1 else str(network))
    if not out:
        raise ConfigError(name, raw, "must list at least one address, network or *")
    return tuple(dict.fromkeys(out))


def pem_file(name: str, raw: str) -> str:
    # A readable PEM file; server.tokens parses the key (no PyJWT in the master).
    path = raw.strip()
    try:
        with open(path, "rb") as file:
            head = file.read(64 * 1024)
    except OSError as exc:
        raise ConfigError(name, raw, f"cannot read the file: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in head:
        raise ConfigError(name, raw, "not a PEM file (no -----BEGIN line)")
    return path
