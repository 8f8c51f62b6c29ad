"""Every setting Jobstream reads, parsed in one place.

``Settings.from_env(os.environ)`` is the only code that looks at the
environment. It is imported by ``gunicorn.conf.py`` in the unpatched master,
so this module imports nothing beyond the standard library and creates no
locks, threads or sockets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has a value Jobstream cannot run with."""

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(f"invalid setting {name}={value!r}: {reason}")
        self.name = name
        self.value = value
        self.reason = reason


def _number(kind: Callable[[str], T], minimum: float, inclusive: bool) -> Callable[[str, str], T]:
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


_positive_int = _number(int, 1, inclusive=True)
_non_negative_int = _number(int, 0, inclusive=True)
_positive_seconds = _number(float, 0, inclusive=False)
_non_negative_seconds = _number(float, 0, inclusive=True)


def _port(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value > 65535:
        raise ConfigError(name, raw, "must be a TCP port (1-65535)")
    return value


# RFC 1123 host name labels: letters, digits and inner hyphens.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _host(name: str, raw: str) -> str:
    """An address to listen on: an IPv4 or IPv6 literal or a host name."""
    value = raw.strip()
    if value.startswith("[") and value.endswith("]"):
        # Brackets, as in a URL, and only around an IPv6 address.
        if _ip_version(value[1:-1]) == 6:
            return value[1:-1]
    elif _ip_version(value) or _is_host_name(value):
        return value
    raise ConfigError(name, raw, "must be an IPv4 or IPv6 address (such as 127.0.0.1, 0.0.0.0 or ::) or a host name")


def _ip_version(value: str) -> int | None:
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return None


def _is_host_name(value: str) -> bool:
    labels = value.removesuffix(".").split(".")
    # A last label of digits would be a malformed IPv4 address, not a name.
    return len(value) <= 253 and all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(name, raw, f"must be one of {', '.join(choices)}")
        return value

    return parse


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _csv(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _field(env: str, default: Any, parse: Callable[[str, str], Any]) -> Any:
    """A dataclass field that knows its environment variable and parser."""
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse})


@dataclass(frozen=True)
class Settings:
    """Typed settings; units are part of the names."""

    # Streaming core (the original Go constants).
    max_connections: int = _field("STREAM_MAX_CONNECTIONS", 1000, _positive_int)
    client_buffer: int = _field("STREAM_CLIENT_BUFFER", 50, _positive_int)
    keepalive_seconds: float = _field("STREAM_KEEPALIVE_INTERVAL", 30.0, _positive_seconds)
    cleanup_seconds: float = _field("STREAM_CLEANUP_INTERVAL", 60.0, _positive_seconds)
    send_timeout_seconds: float = _field("STREAM_SEND_TIMEOUT", 5.0, _positive_seconds)
    retry_ms: int = _field("STREAM_RETRY_MS", 3000, _non_negative_int)
    # Delivery: history, reconnect spreading, soft rejection.
    history_size: int = _field("STREAM_HISTORY_SIZE", 1000, _non_negative_int)
    reconnect_jitter_ms: int = _field("STREAM_RECONNECT_JITTER_MS", 10000, _non_negative_int)
    drain_seconds: float = _field("STREAM_DRAIN_SECONDS", 0.0, _non_negative_seconds)
    reject_mode: str = _field("STREAM_REJECT_MODE", "status", _choice("status", "retry"))
    max_connections_per_ip: int = _field("STREAM_MAX_CONNECTIONS_PER_IP", 0, _non_negative_int)
    allowed_origins: tuple[str, ...] = _field("STREAM_ALLOWED_ORIGINS", (), _csv)
    # Process. HOST: loopback unless told otherwise, as gunicorn and uvicorn
    # default; 0.0.0.0 (or ::) for containers and a proxy on another host.
    host: str = _field("HOST", "127.0.0.1", _host)
    port: int = _field("PORT", 8000, _port)
    web_concurrency: int = _field("WEB_CONCURRENCY", 1, _positive_int)
    log_level: str = _field("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error", "critical"))
    trusted_proxies: int = _field("TRUSTED_PROXIES", 0, _non_negative_int)
    api_token: str = _field("API_TOKEN", "", _text)
    redis_url: str = _field("REDIS_URL", "", _text)
    # Jobs.
    jobs_db: str = _field("JOBS_DB", "./var/jobs.db", _text)
    jobs_concurrency: int = _field("JOBS_CONCURRENCY", 4, _positive_int)
    jobs_handlers: tuple[str, ...] = _field("JOBS_HANDLERS", (), _csv)

    def __post_init__(self) -> None:
        if self.reconnect_jitter_ms < self.retry_ms:
            raise ConfigError(
                "STREAM_RECONNECT_JITTER_MS",
                str(self.reconnect_jitter_ms),
                f"must be >= STREAM_RETRY_MS ({self.retry_ms})",
            )
        if self.web_concurrency > 1 and not self.redis_url:
            raise ConfigError(
                "WEB_CONCURRENCY",
                str(self.web_concurrency),
                "more than one worker needs REDIS_URL: the in-process fan-out and "
                "SQLite history cannot cross processes",
            )
        if not self.jobs_db:
            raise ConfigError("JOBS_DB", self.jobs_db, "must be a file path")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from a mapping such as ``os.environ``.

        Unset or empty variables take the default; anything unparsable raises
        ``ConfigError`` naming the variable and its value.
        """
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(field.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = field.metadata["parse"](field.metadata["env"], raw)
        return cls(**values)

    @property
    def bind(self) -> str:
        """gunicorn's ``bind``: ``HOST:PORT``, an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """Settings by environment name, secrets masked, for the start-up log."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "api_token":
                value = "set" if value else "unset"
            elif field.name == "redis_url" and value:
                value = _mask_password(value)
            out[field.metadata["env"]] = list(value) if isinstance(value, tuple) else value
        return out


def _mask_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url
