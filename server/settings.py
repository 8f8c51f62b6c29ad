"""Every setting Jobstream reads, parsed in one place.

``Settings.from_env(os.environ)`` is the only code that reads Jobstream's
settings from the environment (``PROMETHEUS_MULTIPROC_DIR``, which belongs to
prometheus_client, is handled by ``gunicorn.conf.py`` and
``streaming.ops.metrics``). It is imported by ``gunicorn.conf.py`` in the
unpatched master, so this module imports nothing beyond the standard library
and creates no locks, threads or sockets.

Every field carries its variable, its parser and a ``doc``;
``python -m scripts.settings_doc`` renders docs/settings.md from them, grouped
by the comment lines between the fields.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

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


def _pem_file(name: str, raw: str) -> str:
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


def _field(env: str, default: Any, parse: Callable[[str, str], Any], doc: str = "") -> Any:
    """A dataclass field that knows its environment variable, its parser and
    what it means (``doc``, one or two sentences of Markdown for docs/settings.md)."""
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Typed settings; units are part of the names."""

    # Streams: capacity, buffers, keep-alives and timeouts.
    max_connections: int = _field(
        "STREAM_MAX_CONNECTIONS",
        1000,
        _positive_int,
        "Open streams allowed per instance (all workers of one gunicorn master). One more gets `503` +"
        " `Retry-After`, or `event: overloaded` with `STREAM_REJECT_MODE=retry`.",
    )
    client_buffer: int = _field(
        "STREAM_CLIENT_BUFFER",
        50,
        _positive_int,
        "Events queued per stream. When the buffer is full, the next event is dropped for that stream only"
        " and replayed from history before anything newer.",
    )
    keepalive_seconds: float = _field(
        "STREAM_KEEPALIVE_INTERVAL",
        30.0,
        _positive_seconds,
        "Seconds of silence after which a stream gets a `: keepalive` comment. Proxy and load balancer"
        " read timeouts must be longer.",
    )
    cleanup_seconds: float = _field(
        "STREAM_CLEANUP_INTERVAL",
        60.0,
        _positive_seconds,
        "Seconds between sweeps that end stale streams (no successful write for twice the keep-alive plus the"
        " send timeout) and streams whose buffer stayed full too long.",
    )
    send_timeout_seconds: float = _field(
        "STREAM_SEND_TIMEOUT",
        5.0,
        _positive_seconds,
        "Seconds a stream's buffer may stay full before the stream is evicted: its socket is shut down and"
        " the browser reconnects with `Last-Event-ID`.",
    )
    retry_ms: int = _field(
        "STREAM_RETRY_MS",
        3000,
        _non_negative_int,
        "The `retry:` (milliseconds) every stream opens with: how long a browser waits before it reconnects.",
    )
    # Delivery: history, reconnect spreading, soft rejection.
    history_size: int = _field(
        "STREAM_HISTORY_SIZE",
        1000,
        _non_negative_int,
        "Newest events kept for `Last-Event-ID` replay and gap heals; 0 turns replay off. Embedded: kept in"
        " `JOBS_DB`. With Redis the stream keeps at least this many, and never fewer than 100.",
    )
    reconnect_jitter_ms: int = _field(
        "STREAM_RECONNECT_JITTER_MS",
        10000,
        _non_negative_int,
        "Upper bound (ms) of the random delay, drawn from [`STREAM_RETRY_MS`, this], sent as `retry:` with"
        " the shutdown farewell and as `Retry-After`/`retry:` with a refusal. Must be ≥ `STREAM_RETRY_MS`.",
    )
    drain_seconds: float = _field(
        "STREAM_DRAIN_SECONDS",
        0.0,
        _non_negative_seconds,
        "On SIGTERM, spread the streams' farewells over this many seconds (0: all at once). gunicorn's"
        " `graceful_timeout` becomes this + 15.",
    )
    reject_mode: str = _field(
        "STREAM_REJECT_MODE",
        "status",
        _choice("status", "retry"),
        "How a stream refused at capacity is answered. `status`: `503` (`429` per address) + `Retry-After`,"
        " which ends a plain `EventSource` for good; `retry`: `200` + `retry:` + `event: overloaded`, so it"
        " comes back by itself. While draining both answer `200` + `retry:` + `event: shutdown`.",
    )
    max_connections_per_ip: int = _field(
        "STREAM_MAX_CONNECTIONS_PER_IP",
        0,
        _non_negative_int,
        "Open streams per client address per instance (0: no limit); one more gets `429`. The address is"
        " the one `TRUSTED_PROXIES` yields.",
    )
    allowed_origins: tuple[str, ...] = _field(
        "STREAM_ALLOWED_ORIGINS",
        (),
        _csv,
        "Comma-separated origins (or `*`) whose pages may open `/stream` and call the JSON API cross-origin."
        " Cookies only for `/stream` from an origin listed by name (its JWT cookie). Unset: no CORS headers.",
    )
    # Process.
    host: str = _field(
        "HOST",
        "127.0.0.1",
        _host,
        "Address gunicorn listens on (an IPv4/IPv6 address or a host name; IPv6 is bound in brackets). The"
        " default, as gunicorn's and uvicorn's, serves this machine only (nginx on the same host);"
        " `0.0.0.0` (or `::`) in a container or behind a proxy on another machine.",
    )
    port: int = _field("PORT", 8000, _port, "TCP port gunicorn listens on.")
    web_concurrency: int = _field(
        "WEB_CONCURRENCY",
        1,
        _positive_int,
        "gunicorn worker processes; more than 1 needs `REDIS_URL`. Stream limits and `/health` then count"
        " the whole instance.",
    )
    log_level: str = _field(
        "LOG_LEVEL",
        "info",
        _choice("debug", "info", "warning", "error", "critical"),
        "How much the app and gunicorn log (JSON lines on stderr; access lines stay off at every level).",
    )
    trusted_proxies: int = _field(
        "TRUSTED_PROXIES",
        0,
        _non_negative_int,
        "Proxies in front of gunicorn that append to `X-Forwarded-For` (nginx alone: 1; a load balancer in"
        " front of nginx: 2). The client's address and scheme are taken that many hops from the right; 0"
        " trusts no header.",
    )
    api_token: str = _field(
        "API_TOKEN",
        "",
        _text,
        "Bearer token required for every write (any method but GET, HEAD and OPTIONS) and for `/admin/*`."
        " Unset: everything is open and each worker logs a warning.",
    )
    redis_url: str = _field(
        "REDIS_URL",
        "",
        _text,
        "`redis://` or `rediss://` URL of a Redis 7.0 or newer: events, their history and the jobs then"
        " live there, shared by every worker and host. Unset: one worker, SQLite.",
    )
    # Tokens: JWTs for private streams and scoped writers (docs/security.md).
    jwt_secret: str = _field(
        "JWT_SECRET",
        "",
        _text,
        "Shared secret that signs and verifies JWTs with HS256 (and lets `flask --app app token` mint them)."
        " Use at least 32 random bytes. Set this or `JWT_PUBLIC_KEY`, not both.",
    )
    jwt_public_key: str = _field(
        "JWT_PUBLIC_KEY",
        "",
        _pem_file,
        "Path of a PEM public key (RSA: RS256, EC P-256: ES256) that verifies JWTs minted elsewhere; read at"
        " start-up, and a missing or invalid file stops it.",
    )
    jwt_audience: str = _field(
        "JWT_AUDIENCE",
        "",
        _text,
        "When set, a JWT's `aud` must contain this value. Unset, a JWT with an `aud` is refused (RFC 7519 4.1.3).",
    )
    jwt_issuer: str = _field(
        "JWT_ISSUER", "", _text, "When set, a JWT's `iss` must be this value; unset, `iss` is not checked."
    )
    jwt_cookie: str = _field(
        "JWT_COOKIE",
        "jobstream_token",
        _text,
        "Cookie a browser's `EventSource` carries its JWT in (sent cross-origin only with `withCredentials`).",
    )
    stream_auth: str = _field(
        "STREAM_AUTH",
        "off",
        _choice("off", "optional", "required"),
        "Who may open `/stream`. `off`: anyone, tokens ignored; `optional`: anyone, and a stream with a JWT"
        " sees only what it grants (a bad one is `401`); `required`: a valid JWT only. Other than `off`"
        " needs `JWT_SECRET` or `JWT_PUBLIC_KEY`.",
    )
    # Jobs.
    jobs_db: str = _field(
        "JOBS_DB",
        "./var/jobs.db",
        _text,
        "SQLite file for the jobs and the event history; its directory is created at start-up. Not used"
        " with `REDIS_URL`.",
    )
    jobs_concurrency: int = _field(
        "JOBS_CONCURRENCY",
        4,
        _positive_int,
        "Jobs one process runs at once, in OS threads: each server worker, each `python -m jobs.worker`.",
    )
    jobs_handlers: tuple[str, ...] = _field(
        "JOBS_HANDLERS",
        (),
        _csv,
        "Comma-separated modules imported at start-up to register job handlers (`@handler`). One that"
        " cannot be imported stops the process from starting.",
    )

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
        if self.jwt_secret and self.jwt_public_key:
            raise ConfigError("JWT_PUBLIC_KEY", self.jwt_public_key, "set JWT_SECRET or JWT_PUBLIC_KEY, not both")
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError("JWT_SECRET", "***", f"must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 section 3.2)")
        if self.stream_auth != "off" and not (self.jwt_secret or self.jwt_public_key):
            raise ConfigError("STREAM_AUTH", self.stream_auth, "needs JWT_SECRET or JWT_PUBLIC_KEY to verify tokens")
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
            if field.name in ("api_token", "jwt_secret"):
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
