"""``REDIS_URL``: which Redis deployment to talk to, and how durably.

Standard library only, like ``server.settings`` (the unpatched gunicorn master
imports both); ``streaming.scaleout.redis_client`` builds the redis-py client
from the ``RedisTarget`` parsed here. The forms accepted:

* ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://`` (TLS): one
  Redis, or with ``REDIS_CLUSTER=1`` any node of a Redis Cluster;
* ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master>[/db]``
  (``rediss+sentinel://``: TLS): the sentinels to ask, and the name of the
  master they watch. The password is the master's (and its replicas');
  sentinels that need their own take ``?sentinel_password=`` (and
  ``?sentinel_username=``). Port 26379 by default;
* ``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]``
  (``rediss+cluster://``): startup nodes of a Redis Cluster, which has only
  database 0.

The replicas a write must reach (``WAIT``) are part of the target: 1 by
default with Sentinel, whose point is failing over to a replica, and 0
otherwise (``REDIS_MIN_REPLICAS_ACK`` overrides both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, unquote

from server.parsers import ConfigError

STANDALONE = "standalone"
SENTINEL = "sentinel"
CLUSTER = "cluster"

REDIS_PORT = 6379
SENTINEL_PORT = 26379
DEFAULT_WAIT_TIMEOUT_MS = 500

SCHEMES: dict[str, tuple[str, bool]] = {
    "redis": (STANDALONE, False),
    "rediss": (STANDALONE, True),
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
}
# Query parameters of the sentinel and cluster forms (``redis://`` and
# ``rediss://`` pass theirs to redis-py's ``from_url``, which knows its own).
SENTINEL_QUERY = frozenset({"sentinel_username", "sentinel_password"})

# Makes the ConfigError for a reason.
Bad = Callable[[str], ConfigError]


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``REDIS_URL``: what to connect to, and how many replicas each
    acknowledged write must reach within ``wait_timeout_ms``."""

    kind: str  # STANDALONE, SENTINEL or CLUSTER
    url: str  # as given (redis-py parses the redis:// and rediss:// forms itself)
    nodes: tuple[tuple[str, int], ...]  # the host, the sentinels or the startup nodes
    service: str = ""  # the Sentinel master's name
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    min_replicas: int = 0
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS

    def with_durability(self, min_replicas: int | None, wait_timeout_ms: int) -> RedisTarget:
        """``min_replicas`` None: the default for this kind (1 with Sentinel, else 0)."""
        if min_replicas is None:
            min_replicas = 1 if self.kind == SENTINEL else 0
        return replace(self, min_replicas=min_replicas, wait_timeout_ms=wait_timeout_ms)


def as_target(target: RedisTarget | str) -> RedisTarget:
    """``target`` itself, or the ``REDIS_URL`` ``target`` parsed with the default ``WAIT`` settings."""
    if isinstance(target, RedisTarget):
        return target
    return parse_redis_url(target).with_durability(None, DEFAULT_WAIT_TIMEOUT_MS)


def parse_redis_url(url: str, cluster: bool = False, name: str = "REDIS_URL") -> RedisTarget:
    """The target ``url`` names; ``cluster`` (``REDIS_CLUSTER``) makes a
    ``redis://`` or ``rediss://`` URL a Cluster node. Raises ``ConfigError``
    naming ``name`` (the password masked)."""
    shown = mask_password(url)

    def bad(reason: str) -> ConfigError:
        return ConfigError(name, shown, reason)

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise bad(f"the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    kind, ssl = SCHEMES[scheme.lower()]
    if cluster and kind == SENTINEL:
        raise bad("REDIS_CLUSTER=1 takes a redis://, rediss:// or redis+cluster:// URL, not a Sentinel one")
    if cluster:
        kind = CLUSTER
    rest, _, query_text = rest.partition("?")
    rest, _, _fragment = rest.partition("#")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts_text = netloc.rpartition("@")
    if not at:
        hosts_text = netloc
    username, password = _credentials(userinfo) if at else (None, None)
    default_port = SENTINEL_PORT if kind == SENTINEL else REDIS_PORT
    nodes = tuple(_node(part, default_port, bad) for part in hosts_text.split(","))
    if len(nodes) > 1 and scheme.lower() in ("redis", "rediss"):
        raise bad("several hosts need redis+sentinel:// or redis+cluster://")
    segments = [unquote(s) for s in path.split("/")] if path else []
    service = ""
    if kind == SENTINEL:
        if not segments or not segments[0]:
            raise bad("name the master the sentinels watch: redis+sentinel://host:port/<master-name>")
        service, segments = segments[0], segments[1:]
    db = _db(segments, bad)
    if kind == CLUSTER and db != 0:
        raise bad("Redis Cluster has only database 0")
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    if kind == SENTINEL or scheme.lower().endswith("+cluster"):
        allowed = SENTINEL_QUERY if kind == SENTINEL else frozenset()
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise bad(f"unknown query parameter {unknown[0]!r} (known: {', '.join(sorted(allowed)) or 'none'})")
    return RedisTarget(
        kind=kind,
        url=url,
        nodes=nodes,
        service=service,
        db=db,
        username=username,
        password=password,
        ssl=ssl,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        # redis://secret@host: one word is a password (Redis before ACLs), as redis-py reads it.
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _node(text: str, default_port: int, bad: Bad) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, close, after = text[1:].partition("]")
        if not close or (after and not after.startswith(":")):
            raise bad(f"{text!r} is not [IPv6]:port")
        port_text = after[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise bad("a host is missing")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad(f"{port_text!r} is not a TCP port (1-65535)")
    return host, int(port_text)


def _db(segments: list[str], bad: Bad) -> int:
    if not segments or segments == [""]:
        return 0
    if len(segments) > 1 and any(segments[1:]):
        raise bad(f"unexpected path after the database: {'/'.join(segments)!r}")
    if not segments[0].isdigit():
        raise bad(f"the database must be a number, not {segments[0]!r}")
    return int(segments[0])


def mask_password(url: str) -> str:
    """``url`` with its password (and a ``sentinel_password``) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    rest, qmark, query = rest.partition("?")
    if "sentinel_password=" in query:
        query = "&".join(
            "sentinel_password=***" if part.startswith("sentinel_password=") else part for part in query.split("&")
        )
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        creds, _, hosts = netloc.rpartition("@")
        user, colon, _password = creds.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    return f"{scheme}{sep}{netloc}{slash}{path}{qmark}{query}"
