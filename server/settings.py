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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server import parsers
from server.parsers import MIN_SECRET_BYTES, ConfigError
from server.redis_url import DEFAULT_WAIT_TIMEOUT_MS, RedisTarget, mask_password, parse_redis_url

__all__ = ["ConfigError", "Settings"]


def _field(env: str, default: Any, parse: Callable[[str, str], Any], doc: str = "", blank: bool = True) -> Any:
    """A dataclass field that knows its environment variable, its parser and
    what it means (``doc``, one or two sentences of Markdown for docs/settings.md).
    ``blank=False``: a value of only whitespace goes to the parser instead of
    meaning "unset"."""
    return dataclasses.field(default=default, metadata={"env": env, "parse": parse, "doc": doc, "blank": blank})


@dataclass(frozen=True)
class Settings:
    """Typed settings; units are part of the names."""

    # Streams: capacity, buffers, keep-alives and timeouts.
    max_connections: int = _field(
        "STREAM_MAX_CONNECTIONS",
        1000,
        parsers.positive_int,
        "Open streams allowed per instance (all workers of one gunicorn master). One more gets `503` +"
        " `Retry-After`, or `event: overloaded` with `STREAM_REJECT_MODE=retry`.",
    )
    client_buffer: int = _field(
        "STREAM_CLIENT_BUFFER",
        50,
        parsers.positive_int,
        "Events queued per stream. When the buffer is full, the next event is dropped for that stream only"
        " and replayed from history before anything newer.",
    )
    keepalive_seconds: float = _field(
        "STREAM_KEEPALIVE_INTERVAL",
        30.0,
        parsers.positive_seconds,
        "Seconds of silence after which a stream gets a `: keepalive` comment. Proxy and load balancer"
        " read timeouts must be longer.",
    )
    cleanup_seconds: float = _field(
        "STREAM_CLEANUP_INTERVAL",
        60.0,
        parsers.positive_seconds,
        "Seconds between sweeps that end stale streams (no successful write for twice the keep-alive plus the"
        " send timeout) and streams whose buffer stayed full too long.",
    )
    background_interval_seconds: float = _field(
        "STREAM_BACKGROUND_INTERVAL",
        5.0,
        parsers.positive_seconds,
        "Seconds between two low-priority events of one key (a job's progress) on a background stream"
        " (`/stream?qos=background`, or a WebSocket that said it is hidden); high-priority events go at once.",
    )
    send_timeout_seconds: float = _field(
        "STREAM_SEND_TIMEOUT",
        5.0,
        parsers.positive_seconds,
        "Seconds a stream's buffer may stay full before the stream is evicted: its socket is shut down and"
        " the browser reconnects with `Last-Event-ID`.",
    )
    retry_ms: int = _field(
        "STREAM_RETRY_MS",
        3000,
        parsers.non_negative_int,
        "The `retry:` (milliseconds) every stream opens with: how long a browser waits before it reconnects.",
    )
    canary_seconds: float = _field(
        "STREAM_CANARY_INTERVAL",
        2.0,
        parsers.non_negative_seconds,
        "Seconds between two canaries: each worker publishes a tiny event on the internal topic"
        " `jobstream/canary` and times it back through its own fan-out (with Redis, through the broker)."
        " Three missed in a row turn `/health` `503` `degraded`. 0 turns the canary off.",
    )
    # Delivery: history, reconnect spreading, soft rejection.
    history_size: int = _field(
        "STREAM_HISTORY_SIZE",
        1000,
        parsers.non_negative_int,
        "Newest events kept for `Last-Event-ID` replay and gap heals; 0 turns replay off. Embedded: kept in"
        " `JOBS_DB`. With Redis the stream keeps at least this many, and never fewer than 100.",
    )
    reconnect_jitter_ms: int = _field(
        "STREAM_RECONNECT_JITTER_MS",
        10000,
        parsers.non_negative_int,
        "Upper bound (ms) of the random delay, drawn from [`STREAM_RETRY_MS`, this], sent as `retry:` with"
        " the shutdown farewell and as `Retry-After`/`retry:` with a refusal. Must be ≥ `STREAM_RETRY_MS`.",
    )
    drain_seconds: float = _field(
        "STREAM_DRAIN_SECONDS",
        0.0,
        parsers.non_negative_seconds,
        "On SIGTERM, spread the streams' farewells over this many seconds (0: all at once). gunicorn's"
        " `graceful_timeout` becomes this + 15.",
    )
    reject_mode: str = _field(
        "STREAM_REJECT_MODE",
        "status",
        parsers.choice("status", "retry"),
        "How a stream refused at capacity is answered. `status`: `503` (`429` per address) + `Retry-After`,"
        " which ends a plain `EventSource` for good; `retry`: `200` + `retry:` + `event: overloaded`, so it"
        " comes back by itself. While draining both answer `200` + `retry:` + `event: shutdown`.",
    )
    front_door: bool = _field(
        "STREAM_FRONT_DOOR",
        True,
        parsers.flag,
        "`1`: the worker reads a connection's plain first `GET /stream` itself, not gunicorn (a cheaper connect;"
        " off by itself with TLS in gunicorn, the PROXY protocol, h2c or an access log: docs/deployment.md).",
    )
    ws_compression: bool = _field(
        "STREAM_WS_COMPRESSION",
        False,
        parsers.flag,
        "`1`: `/ws` accepts `permessage-deflate` when offered (browsers do): smaller frames, but ~100 KB of zlib"
        " state per socket and a frame per socket per event (docs/websocket.md). `0`: declined, uncompressed.",
    )
    max_connections_per_ip: int = _field(
        "STREAM_MAX_CONNECTIONS_PER_IP",
        0,
        parsers.non_negative_int,
        "Open streams per client address (0: no limit); one more gets `429`. Per instance, and with"
        " `REDIS_URL` across every worker of every host (docs/scale-out.md). The address is the one"
        " `TRUSTED_PROXIES` yields.",
    )
    max_connections_fleet: int = _field(
        "STREAM_MAX_CONNECTIONS_FLEET",
        0,
        parsers.non_negative_int,
        "Open streams allowed across every host sharing `REDIS_URL` (0: no fleet limit, only each"
        " instance's `STREAM_MAX_CONNECTIONS`); one more gets `503`. Needs `REDIS_URL`. While Redis is"
        " unreachable only the instance limits apply.",
    )
    fleet_lease_seconds: float = _field(
        "STREAM_FLEET_LEASE_SECONDS",
        10.0,
        parsers.number(float, 1, inclusive=True),
        "With `REDIS_URL`: how long a worker's fleet slots and `/admin/clients` entries outlive its last"
        " refresh in Redis (refreshed every min(1 s, this / 4)), so a dead host's slots are free within"
        " this many seconds. At least 1.",
    )
    allowed_origins: tuple[str, ...] = _field(
        "STREAM_ALLOWED_ORIGINS",
        (),
        parsers.csv,
        "Comma-separated origins (or `*`) whose pages may open `/stream` and call the JSON API cross-origin."
        " Cookies only for `/stream` from an origin listed by name (its JWT cookie). Unset: no CORS headers.",
    )
    # Process.
    host: str = _field(
        "HOST",
        "127.0.0.1",
        parsers.host,
        "Address gunicorn listens on (an IPv4/IPv6 address or a host name; IPv6 is bound in brackets). The"
        " default, as gunicorn's and uvicorn's, serves this machine only (nginx on the same host);"
        " `0.0.0.0` (or `::`) in a container or behind a proxy on another machine.",
    )
    port: int = _field("PORT", 8000, parsers.port, "TCP port gunicorn listens on.")
    web_concurrency: int = _field(
        "WEB_CONCURRENCY",
        1,
        parsers.positive_int,
        "gunicorn worker processes; more than 1 needs `REDIS_URL`. Stream limits and `/health` then count"
        " the whole instance.",
    )
    instance_name: str = _field(
        "INSTANCE_NAME",
        "",
        parsers.text,
        "This instance's name in `GET /admin/clients` (`host`, `?host=`) across a fleet. Unset: the"
        " machine's host name.",
    )
    log_level: str = _field(
        "LOG_LEVEL",
        "info",
        parsers.choice("debug", "info", "warning", "error", "critical"),
        "How much the app and gunicorn log (JSON lines on stderr; access lines stay off at every level).",
    )
    trusted_proxies: int = _field(
        "TRUSTED_PROXIES",
        0,
        parsers.non_negative_int,
        "Proxies in front of gunicorn that append to `X-Forwarded-For` (nginx alone: 1; a load balancer in"
        " front of nginx: 2). The client's address and scheme are taken that many hops from the right, and"
        " only from a peer in `FORWARDED_ALLOW_IPS`; 0 trusts no header.",
    )
    forwarded_allow_ips: tuple[str, ...] = _field(
        "FORWARDED_ALLOW_IPS",
        ("127.0.0.1", "::1"),
        parsers.networks,
        "Comma-separated addresses or CIDR networks of the proxies (`10.0.0.0/8`), or `*` for any peer: only a"
        " request whose TCP peer is one of them has its `X-Forwarded-For`/`-Proto` believed (with"
        " `TRUSTED_PROXIES` > 0). gunicorn reads it too, for `wsgi.url_scheme`. Default `127.0.0.1,::1`,"
        " gunicorn's: nginx on the same host.",
    )
    api_token: str = _field(
        "API_TOKEN",
        "",
        parsers.secret,
        "Bearer token required for every write (any method but GET, HEAD and OPTIONS) and for `/admin/*`."
        " Unset or empty: everything is open and each worker logs a warning; only whitespace stops start-up.",
        blank=False,
    )
    redis_url: str = _field(
        "REDIS_URL",
        "",
        parsers.text,
        "URL of a Redis 7.0 or newer: events, their history and the jobs then live there, shared by every"
        " worker and host. `redis://` or `rediss://` (one Redis), `redis+sentinel://host:port[,host:port]/"
        "<master>[/db]` (Sentinel), `redis+cluster://host:port[,host:port]` (Cluster); see docs/scale-out.md."
        " Unset: one worker, SQLite.",
    )
    redis_cluster: bool = _field(
        "REDIS_CLUSTER",
        False,
        parsers.flag,
        "`1`: the `redis://` or `rediss://` host of `REDIS_URL` is a node of a Redis Cluster (as `redis+cluster://`).",
    )
    redis_min_replicas_ack: int | None = _field(
        "REDIS_MIN_REPLICAS_ACK",
        None,
        parsers.non_negative_int,
        "Replicas that must confirm (`WAIT`) a publish or a job write before it is answered `202`/`201`;"
        " fewer within `REDIS_WAIT_TIMEOUT_MS` is a `503`. Unset: 1 with Sentinel, 0 otherwise.",
    )
    redis_wait_timeout_ms: int = _field(
        "REDIS_WAIT_TIMEOUT_MS",
        DEFAULT_WAIT_TIMEOUT_MS,
        parsers.positive_int,
        "Milliseconds a write waits for `REDIS_MIN_REPLICAS_ACK` replicas before it is answered `503`.",
    )
    # Tokens: JWTs for private streams and scoped writers (docs/security.md).
    jwt_secret: str = _field(
        "JWT_SECRET",
        "",
        parsers.text,
        "Shared secret that signs and verifies JWTs with HS256 (and lets `flask --app app token` mint them)."
        " Use at least 32 random bytes. Set this or `JWT_PUBLIC_KEY`, not both.",
    )
    jwt_public_key: str = _field(
        "JWT_PUBLIC_KEY",
        "",
        parsers.pem_file,
        "Path of a PEM public key (RSA: RS256, EC P-256: ES256) that verifies JWTs minted elsewhere; read at"
        " start-up, and a missing or invalid file stops it.",
    )
    jwt_audience: str = _field(
        "JWT_AUDIENCE",
        "",
        parsers.text,
        "When set, a JWT's `aud` must contain this value. Unset, a JWT with an `aud` is refused (RFC 7519 4.1.3).",
    )
    jwt_issuer: str = _field(
        "JWT_ISSUER", "", parsers.text, "When set, a JWT's `iss` must be this value; unset, `iss` is not checked."
    )
    jwt_cookie: str = _field(
        "JWT_COOKIE",
        "jobstream_token",
        parsers.text,
        "Cookie a browser's `EventSource` carries its JWT in (sent cross-origin only with `withCredentials`).",
    )
    stream_auth: str = _field(
        "STREAM_AUTH",
        "off",
        parsers.choice("off", "optional", "required"),
        "Who may open `/stream`. `off`: anyone, tokens ignored; `optional`: anyone, and a stream with a JWT"
        " sees only what it grants (a bad one is `401`); `required`: a valid JWT only. Other than `off`"
        " needs `JWT_SECRET` or `JWT_PUBLIC_KEY`.",
    )
    # Jobs.
    jobs_db: str = _field(
        "JOBS_DB",
        "./var/jobs.db",
        parsers.text,
        "SQLite file for the jobs and the event history; its directory is created at start-up. Not used"
        " with `REDIS_URL`.",
    )
    jobs_max_pending: int = _field(
        "JOBS_MAX_PENDING",
        10_000,
        parsers.positive_int,
        "Pending jobs the store may hold (the whole fleet's with `REDIS_URL`); `POST /jobs` beyond that is a"
        " `503` with `Retry-After`. Checked before each create, so concurrent creates may pass it by the"
        " number of requests in flight.",
    )
    jobs_concurrency: int = _field(
        "JOBS_CONCURRENCY",
        4,
        parsers.positive_int,
        "Jobs one process runs at once, in OS threads: each server worker, each `python -m jobs.worker`.",
    )
    jobs_handlers: tuple[str, ...] = _field(
        "JOBS_HANDLERS",
        (),
        parsers.csv,
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
        if self.max_connections_fleet and not self.redis_url:
            raise ConfigError(
                "STREAM_MAX_CONNECTIONS_FLEET",
                str(self.max_connections_fleet),
                "a fleet-wide limit needs REDIS_URL: the hosts count their streams there",
            )
        if self.redis_url:
            parse_redis_url(self.redis_url, self.redis_cluster)
        elif self.redis_cluster:
            raise ConfigError("REDIS_CLUSTER", "1", "needs REDIS_URL (a node of the cluster)")
        if self.jwt_secret and self.jwt_public_key:
            raise ConfigError("JWT_PUBLIC_KEY", self.jwt_public_key, "set JWT_SECRET or JWT_PUBLIC_KEY, not both")
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError("JWT_SECRET", "***", f"must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 section 3.2)")
        if self.stream_auth != "off" and not (self.jwt_secret or self.jwt_public_key):
            raise ConfigError("STREAM_AUTH", self.stream_auth, "needs JWT_SECRET or JWT_PUBLIC_KEY to verify tokens")
        if not self.jobs_db:
            raise ConfigError("JOBS_DB", self.jobs_db, "must be a file path")
        if self.api_token and not self.api_token.strip():
            raise ConfigError("API_TOKEN", self.api_token, "only whitespace; unset it to run without a token")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from a mapping such as ``os.environ``.

        Unset or empty variables take the default, and so do blank ones except
        ``API_TOKEN``'s; anything unparsable raises ``ConfigError`` naming the
        variable and its value.
        """
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(field.metadata["env"])
            if raw is None or raw == "" or (raw.strip() == "" and field.metadata["blank"]):
                continue
            values[field.name] = field.metadata["parse"](field.metadata["env"], raw)
        return cls(**values)

    @property
    def bind(self) -> str:
        """gunicorn's ``bind``: ``HOST:PORT``, an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def redis(self) -> RedisTarget:
        """``REDIS_URL`` parsed, with ``REDIS_CLUSTER`` and the ``WAIT`` settings (only with ``REDIS_URL``)."""
        target = parse_redis_url(self.redis_url, self.redis_cluster)
        return target.with_durability(self.redis_min_replicas_ack, self.redis_wait_timeout_ms)

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
                value = mask_password(value)
            out[field.metadata["env"]] = list(value) if isinstance(value, tuple) else value
        return out
