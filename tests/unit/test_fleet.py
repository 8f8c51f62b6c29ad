"""The pure parts of the fleet's limits and view (streaming/scaleout/fleet.py): no Redis, no servers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from server.settings import ConfigError, Settings
from streaming.core.client import Client
from streaming.core.reasons import RefusalReason
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.scaleout import fleet_scripts
from streaming.scaleout.fleet import Fleet
from streaming.scaleout.fleet_lease import Breaker, Lease, refresh_seconds, view_seconds
from streaming.scaleout.fleet_scripts import KEYS, key_slot, merge_views


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def client(ip: str = "10.0.0.1") -> Client:
    return Client.create(4, remote_addr=ip, user_agent="t", topics=TopicFilter())


def test_every_key_is_in_one_cluster_slot_under_the_hash_tag() -> None:
    assert all(key.startswith("{jobstream}:fleet:") for key in KEYS)
    assert len({key_slot(key) for key in KEYS}) == 1
    # Each script names its keys only as KEYS[n], so a Cluster client routes it by them.
    for script in (fleet_scripts.CALL_SCRIPT, fleet_scripts.LEAVE_SCRIPT, fleet_scripts.VIEW_SCRIPT):
        assert "jobstream" not in script


def test_refresh_is_four_times_per_lease_and_at_least_every_second() -> None:
    assert refresh_seconds(2.0) == 0.5
    assert refresh_seconds(10.0) == 1.0
    assert refresh_seconds(60.0) == 1.0
    # The view: every refresh while small, then in proportion to its size, capped.
    assert view_seconds(10, 0.5) == 0.5
    assert view_seconds(10_000, 1.0) == 10.0
    assert view_seconds(1_000_000, 1.0) == 30.0


def test_lease_is_due_lapses_and_recovers_on_an_injected_clock() -> None:
    clock = Clock()
    lease = Lease(2.0, clock)
    assert lease.due_in() == 0.0 and lease.lapsed()  # never refreshed
    lease.refreshed(clock.now, full=True)
    assert lease.due_in() == 0.5 and not lease.lapsed()
    clock.now += 0.3
    assert lease.due_in() == pytest.approx(0.2)
    clock.now += 0.2
    assert lease.due_in() == 0.0
    # An admission call extends the lease but does not replace the periodic refresh.
    lease.refreshed(clock.now, full=False)
    assert lease.due_in() == 0.0
    clock.now += 1.99
    assert not lease.lapsed()
    clock.now += 0.01  # a whole lease without a successful call: others may have reaped us
    assert lease.lapsed()


def test_breaker_retries_after_its_interval() -> None:
    clock = Clock()
    breaker = Breaker(retry_seconds=1.0, clock=clock)
    assert breaker.up and breaker.may_try() and breaker.wait_seconds() == 0.0
    assert breaker.failed() is True
    assert breaker.failed() is False  # not news the second time
    assert not breaker.may_try() and breaker.wait_seconds() == 1.0
    clock.now += 1.0
    assert breaker.may_try()
    assert breaker.succeeded() is True and breaker.up
    assert breaker.succeeded() is False


def test_views_merge_with_host_and_worker_pid_and_filter_by_host() -> None:
    def view(host: str, pid: int, *ids: str) -> str:
        clients = [{"id": i, "connected_at": 1.0, "lag_seconds": 0.0} for i in ids]
        return json.dumps({"wid": f"{pid}-ab", "host": host, "pid": pid, "at": 1.0, "clients": clients})

    raw = [view("a", 10, "c1", "c2"), None, "not json", view("b", 20, "c1")]
    merged = merge_views(raw)
    assert [(c["host"], c["worker_pid"], c["id"]) for c in merged] == [
        ("a", 10, "c1"),
        ("a", 10, "c2"),
        ("b", 20, "c1"),
    ]
    assert [c["id"] for c in merge_views(raw, host="b")] == ["c1"]
    assert merge_views(raw, host="nowhere") == []


def test_a_fleet_limit_without_redis_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"STREAM_MAX_CONNECTIONS_FLEET": "100"})
    assert error.value.name == "STREAM_MAX_CONNECTIONS_FLEET"
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"STREAM_FLEET_LEASE_SECONDS": "0.5"})
    assert error.value.name == "STREAM_FLEET_LEASE_SECONDS"
    assert Settings.from_env({"REDIS_URL": "redis://x", "STREAM_MAX_CONNECTIONS_FLEET": "5"}).max_connections_fleet == 5


class _DownRedis:
    """A client whose every script call fails as an unreachable Redis does."""

    def register_script(self, text: str) -> Any:
        def call(**kw: Any) -> Any:
            raise redis.ConnectionError("connection refused")

        return call

    def close(self) -> None:
        pass


def test_redis_down_admits_at_once_on_local_limits_and_keeps_no_release_for_them() -> None:
    fleet = Fleet(_DownRedis, list, host="h", lease_seconds=2.0, max_per_ip=1)
    fleet.start()
    try:
        first = client()
        started = time.monotonic()
        assert fleet.enter(first) is None  # the first call finds Redis down: fallback
        assert fleet.enter(client()) is None  # now without even asking
        assert time.monotonic() - started < 1.0
        assert not fleet.up and fleet.fallbacks == 2
        fleet.leave(first)
        assert fleet._releases == [] and first not in fleet._uncounted
    finally:
        fleet.stop()


class _Gate:
    def __init__(self, verdict: RefusalReason | None) -> None:
        self.verdict = verdict
        self.entered: list[str] = []
        self.left: list[str] = []

    def enter(self, client: Client) -> RefusalReason | None:
        self.entered.append(client.id)
        return self.verdict

    def leave(self, client: Client) -> None:
        self.left.append(client.id)


def test_the_registry_asks_the_gate_first_and_gives_back_what_it_refuses_itself() -> None:
    decided: list[RefusalReason | None] = []
    registry = Registry(
        max_connections=1, send_timeout_seconds=1, keepalive_seconds=1, on_admit=lambda c, r: decided.append(r)
    )
    registry.gate = refusing = _Gate(RefusalReason.PER_IP)
    assert registry.admit(client()) is RefusalReason.PER_IP
    assert registry.rejected[RefusalReason.PER_IP] == 1 and len(registry) == 0 and refusing.left == []

    registry.gate = gate = _Gate(None)
    kept, extra = client(), client()
    assert registry.admit(kept) is None
    assert registry.admit(extra) is RefusalReason.CAPACITY  # the host's limit, after the fleet said yes
    assert gate.left == [extra.id]
    registry.remove(kept)
    assert gate.left == [extra.id, kept.id]
    registry.begin_drain()
    assert registry.admit(client()) is RefusalReason.DRAINING and len(gate.entered) == 2  # no Redis while draining
    assert decided == [RefusalReason.PER_IP, None, RefusalReason.CAPACITY, RefusalReason.DRAINING]
