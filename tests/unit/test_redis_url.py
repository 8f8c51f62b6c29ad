"""REDIS_URL's forms, the errors that stop start-up, and the WAIT defaults."""

from __future__ import annotations

import pytest

from server.redis_url import CLUSTER, SENTINEL, STANDALONE, RedisTarget, mask_password, parse_redis_url
from server.settings import ConfigError, Settings

ACCEPTED = [
    ("redis://127.0.0.1:6380/2", STANDALONE, (("127.0.0.1", 6380),), "", 2, False),
    ("rediss://cache.example/0", STANDALONE, (("cache.example", 6379),), "", 0, True),
    ("redis+sentinel://s1:26380,s2/mymaster", SENTINEL, (("s1", 26380), ("s2", 26379)), "mymaster", 0, False),
    ("redis+sentinel://s1/mymaster/3", SENTINEL, (("s1", 26379),), "mymaster", 3, False),
    ("rediss+sentinel://[::1]:5000/m", SENTINEL, (("::1", 5000),), "m", 0, True),
    ("redis+cluster://n1:7000,n2:7001", CLUSTER, (("n1", 7000), ("n2", 7001)), "", 0, False),
    ("rediss+cluster://n1:7000/0", CLUSTER, (("n1", 7000),), "", 0, True),
]


@pytest.mark.parametrize(("url", "kind", "nodes", "service", "db", "ssl"), ACCEPTED)
def test_each_form_names_its_deployment(
    url: str, kind: str, nodes: tuple[tuple[str, int], ...], service: str, db: int, ssl: bool
) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.nodes, target.service, target.db, target.ssl) == (kind, nodes, service, db, ssl)


def test_credentials_go_to_the_data_nodes_and_the_sentinels_have_their_own() -> None:
    target = parse_redis_url("redis+sentinel://app:p%40ss@s1:26379/mymaster?sentinel_password=sp&sentinel_username=su")
    assert (target.username, target.password) == ("app", "p@ss")
    assert (target.sentinel_username, target.sentinel_password) == ("su", "sp")
    assert parse_redis_url("redis://:only-a-password@h/0").password == "only-a-password"
    assert parse_redis_url("redis://legacy@h/0").password == "legacy"  # one word is a password, as redis-py reads it


def test_redis_cluster_flag_makes_a_node_url_a_cluster() -> None:
    assert parse_redis_url("redis://n1:7000", cluster=True).kind == CLUSTER
    assert Settings.from_env({"REDIS_URL": "redis://n1:7000", "REDIS_CLUSTER": "1"}).redis.kind == CLUSTER


REFUSED = [
    ("http://h:6379", "scheme must be one of"),
    ("h:6379", "scheme must be one of"),
    ("redis+sentinel://s1:26379", "name the master"),
    ("redis+sentinel://s1:26379/", "name the master"),
    ("redis+sentinel://s1/m/x", "database must be a number"),
    ("redis://h:99999/0", "not a TCP port"),
    ("redis://h:port/0", "not a TCP port"),
    ("redis://:pw@/0", "a host is missing"),
    ("redis://a:1,b:2/0", "several hosts need"),
    ("redis+cluster://n1:7000/1", "only database 0"),
    ("redis+sentinel://s1/m?password=x", "unknown query parameter 'password'"),
    ("redis+cluster://n1?foo=1", "unknown query parameter 'foo'"),
    ("redis+sentinel://[::1/m", r"not \[IPv6\]:port"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_a_bad_url_stops_start_up_naming_redis_url(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        Settings.from_env({"REDIS_URL": url})
    assert caught.value.name == "REDIS_URL"
    assert "REDIS_URL" in str(caught.value)


def test_the_error_masks_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REDIS_URL": "redis+sentinel://:hunter2@s1:26379"})
    assert "hunter2" not in str(caught.value)


def test_redis_cluster_needs_redis_url_and_refuses_sentinel() -> None:
    with pytest.raises(ConfigError, match="REDIS_CLUSTER"):
        Settings.from_env({"REDIS_CLUSTER": "1"})
    with pytest.raises(ConfigError, match=r"REDIS_URL.*not a Sentinel one"):
        Settings.from_env({"REDIS_URL": "redis+sentinel://s/m", "REDIS_CLUSTER": "yes"})
    with pytest.raises(ConfigError, match=r"REDIS_CLUSTER.*must be 1 or 0"):
        Settings.from_env({"REDIS_URL": "redis://h", "REDIS_CLUSTER": "maybe"})


@pytest.mark.parametrize(
    ("url", "replicas"),
    [("redis+sentinel://s1/m", 1), ("redis://h/0", 0), ("rediss://h/0", 0), ("redis+cluster://n1:7000", 0)],
)
def test_min_replicas_ack_defaults_to_one_with_sentinel_only(url: str, replicas: int) -> None:
    target = Settings.from_env({"REDIS_URL": url}).redis
    assert (target.min_replicas, target.wait_timeout_ms) == (replicas, 500)


def test_min_replicas_ack_and_wait_timeout_override_the_defaults() -> None:
    env = {"REDIS_URL": "redis+sentinel://s1/m", "REDIS_MIN_REPLICAS_ACK": "0", "REDIS_WAIT_TIMEOUT_MS": "50"}
    assert (Settings.from_env(env).redis.min_replicas, Settings.from_env(env).redis.wait_timeout_ms) == (0, 50)
    env = {"REDIS_URL": "redis+cluster://n1:7000", "REDIS_MIN_REPLICAS_ACK": "2"}
    assert Settings.from_env(env).redis.min_replicas == 2
    with pytest.raises(ConfigError, match="REDIS_MIN_REPLICAS_ACK"):
        Settings.from_env({"REDIS_URL": "redis://h", "REDIS_MIN_REPLICAS_ACK": "-1"})
    with pytest.raises(ConfigError, match="REDIS_WAIT_TIMEOUT_MS"):
        Settings.from_env({"REDIS_URL": "redis://h", "REDIS_WAIT_TIMEOUT_MS": "0"})


def test_the_start_up_log_masks_both_passwords() -> None:
    url = "redis+sentinel://app:secret@s1/m?sentinel_password=other"
    shown = Settings.from_env({"REDIS_URL": url}).public()["REDIS_URL"]
    assert "secret" not in shown and "other" not in shown and "s1/m" in shown
    assert mask_password("redis://:pw@h/0") == "redis://:***@h/0"


def test_a_url_string_gets_the_default_durability() -> None:
    from server.redis_url import as_target

    assert as_target("redis+sentinel://s/m") == RedisTarget(
        kind=SENTINEL, url="redis+sentinel://s/m", nodes=(("s", 26379),), service="m", min_replicas=1
    )
