"""The one place redis-py clients are made, and the one way writes are confirmed.

``connect(target)`` gives a client for a ``REDIS_URL`` (``server.redis_url``):
``redis.Redis`` for one Redis, the client of a ``redis.sentinel.Sentinel``
``master_for`` the named master, or a ``redis.cluster.RedisCluster``. Every
module that talks to Redis calls it (the broker, the job store, anything that
keeps fleet-wide data).

Timeouts are short and redis-py's own retries are off (one for Cluster, whose
client spends it on refreshing the slot map): a stopped Redis must turn a
request into a prompt 503, not a hang. With Sentinel a lost connection (or a
``READONLY`` reply from a demoted primary, which redis-py turns into a
``ConnectionError``) makes the pool ask the sentinels again on its next
connect, so after a failover the next command goes to the new primary; the
command that met the failure is not retried here: it is reported, and the
caller's own retry (a reader's backoff, a client's 503 and ``Retry-After``)
goes to the new primary.

``Durable`` confirms writes: Redis replicates asynchronously, so a write
acknowledged by the primary alone can be lost when a replica is promoted.
With ``min_replicas`` > 0 each write is sent with ``WAIT min_replicas
timeout`` on the same connection (``WAIT`` counts that connection's writes);
fewer confirmations in time raise ``NotReplicated``, a ``BrokerUnavailable``,
so the API answers 503. The write itself is not undone: the primary has it,
and it may survive (a retry then duplicates it; event and job ids show it).
With Cluster ``WAIT`` must go to the primary of the key's slot (redis-py
would send a keyless ``WAIT`` to every node and add the replies), so the
write and its ``WAIT`` go down that node's own connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from server.redis_url import CLUSTER, SENTINEL, RedisTarget, as_target
from streaming.core.broker import BrokerUnavailable

log = logging.getLogger("jobstream.redis")

Client: TypeAlias = "redis.Redis | RedisCluster"

SOCKET_TIMEOUT_SECONDS = 1.0
# A WAIT answers within its own timeout; the socket must outlast it.
WAIT_MARGIN_SECONDS = 0.5

# Replies that mean "this node cannot take the write now", not a bug in the
# command: a demoted primary, a slot in migration or without a primary.
OUTAGE_REPLIES: tuple[type[Exception], ...] = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.MovedError,
)


class NotReplicated(BrokerUnavailable):
    """The primary took the write, but too few replicas confirmed it in time."""


def is_outage(exc: Exception) -> bool:
    """A Redis error that means "unavailable" (answer 503), as opposed to a bug (a script's error)."""
    if isinstance(exc, OUTAGE_REPLIES):
        return True
    return isinstance(exc, redis.RedisError) and not isinstance(exc, redis.ResponseError)


def connect(target: RedisTarget | str) -> Client:
    """A client with its own pool for ``target`` (a ``RedisTarget`` or a
    ``REDIS_URL``, then with the default ``WAIT`` settings). Connects lazily:
    call it after gevent patched sockets."""
    target = as_target(target)
    timeout = max(SOCKET_TIMEOUT_SECONDS, target.wait_timeout_ms / 1000 + WAIT_MARGIN_SECONDS)
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
        "decode_responses": True,
    }
    no_retry = Retry(NoBackoff(), 0)
    if target.kind == SENTINEL:
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
            "retry": no_retry,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            "ssl": target.ssl,
        }
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            retry=no_retry,
            **common,
        )
        return client
    if target.kind == CLUSTER:
        retry = Retry(NoBackoff(), 1)
        if target.url.partition("://")[0].lower() in ("redis", "rediss"):
            return RedisCluster.from_url(target.url, retry=retry, **common)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],  # type: ignore[no-untyped-call]
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            retry=retry,
            **common,
        )
    return redis.Redis.from_url(target.url, retry=no_retry, **common)


def follow_master(client: Client) -> bool:
    """With Sentinel: ask the sentinels where the primary is now, and when it
    moved, drop the pool's connections to the old one (idle ones at once, the
    others when released). True when it moved.

    A ``SENTINEL FAILOVER`` leaves the old primary a primary for a while
    (until the sentinel reconfigures it, up to ~10 s): connections to it see
    no error, its writes reach no replica (so ``WAIT`` refuses them) and a
    reader there sees none of the new primary's entries. Hence the reader
    calls this every ``FOLLOW_SECONDS`` and ``Durable`` after a shortfall."""
    pool = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return False
    before = pool.master_address
    try:
        after = pool.get_master_address()  # type: ignore[no-untyped-call]
    except redis.RedisError:
        return False  # no sentinel answers: the connections' own errors tell
    if before is not None and after != before:
        log.warning("redis primary moved", extra={"event": "redis_primary_moved", "primary": f"{after[0]}:{after[1]}"})
        return True
    return False


# How often a reader asks the sentinels where the primary is (see follow_master).
FOLLOW_SECONDS = 1.0


class Durable:
    """Writes to ``key``'s primary that count only once ``target.min_replicas`` replicas have them."""

    def __init__(self, client: Client, target: RedisTarget, key: str) -> None:
        self.client = client
        self.min_replicas = target.min_replicas
        self.timeout_ms = target.wait_timeout_ms
        self.key = key  # any key of the slot written to (Cluster: whose primary gets the WAIT)

    def write(self, command: Callable[[Any], Any], strict: bool = True) -> Any:
        """``command(c)`` issues one command on ``c`` (a client or a pipeline);
        its reply, once confirmed. ``strict=False``: too few confirmations are
        logged, not raised (a write nobody is answered for, such as a runner's).
        Redis errors propagate as redis-py raises them (``is_outage`` sorts them)."""
        if self.min_replicas == 0:
            return command(self.client)
        pipe = self._primary().pipeline(transaction=False)
        command(pipe)
        pipe.wait(self.min_replicas, self.timeout_ms)
        try:
            reply, acked = pipe.execute()
        except redis.RedisError as exc:
            if isinstance(self.client, RedisCluster) and is_outage(exc):
                self._refresh_slots()
            raise
        if acked < self.min_replicas:
            follow_master(self.client)  # the primary may have moved under us
            message = f"{acked} of {self.min_replicas} replicas confirmed the write within {self.timeout_ms} ms"
            if strict:
                raise NotReplicated(message)
            log.warning("write not replicated in time", extra={"event": "redis_not_replicated", "detail": message})
        return reply

    def _refresh_slots(self) -> None:
        # The node's own connection does not follow MOVED as the cluster
        # client does: learn the new slot map for the next write.
        assert isinstance(self.client, RedisCluster)
        try:
            self.client.nodes_manager.initialize()
        except redis.RedisError as exc:
            log.warning("cluster slots not refreshed", extra={"event": "redis_slots_stale", "error": str(exc)})

    def _primary(self) -> redis.Redis:
        if isinstance(self.client, RedisCluster):
            return self.client.get_redis_connection(self.client.get_node_from_key(self.key))  # type: ignore[no-untyped-call]
        return self.client
