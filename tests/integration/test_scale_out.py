"""Scale-out through Redis: several workers, several instances behind nginx, outages.

Real ``redis-server``, real ``gunicorn -k gevent`` and real nginx; every stream
is bounded in time and every wait is for an event, not a sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import StartRedis, StartServer
from tests.support import nginx_upstream as nginx_support
from tests.support.nginx_upstream import NginxProcess, readme_blocks
from tests.support.redis import RedisServer
from tests.support.server import ROOT, TEST_ENV, ServerProcess
from tests.support.sse import SSEClient

HANDLERS = "tests.support.job_handlers,tests.support.worker_handlers"


def scale_env(redis: RedisServer, workers: int, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": redis.url, "WEB_CONCURRENCY": str(workers), "JOBS_HANDLERS": HANDLERS, **extra}


def create_job(server: ServerProcess, type: str, **params: object) -> httpx.Response:
    return server.http.post("/jobs", json={"type": type, "params": params})


def open_streams(port: int, count: int, **kw: object) -> list[SSEClient]:
    """Connect all first (so the workers' accept loops share them), then read."""
    clients = [SSEClient(port, **kw).connect() for _ in range(count)]  # type: ignore[arg-type]
    for client in clients:
        client.read_headers()
    return clients


def close_all(clients: list[SSEClient]) -> None:
    for client in clients:
        client.close()


def stream_pids(server: ServerProcess) -> set[int]:
    return {r["pid"] for r in server.log_records() if r.get("event") == "stream_opened"}


def fresh_health(server: ServerProcess) -> httpx.Response:
    """/health on a new connection, so any worker may answer."""
    with httpx.Client(timeout=5) as http:
        return http.get(server.url("/health"))


@pytest.mark.timeout(90)
def test_300_streams_over_three_workers_get_every_event_once_in_order(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    # A worker whose gevent pool is full stops accepting, so a pool of 110
    # spreads the 300 streams over all three workers.
    server = start_server(scale_env(redis_server, 3), args=["--worker-connections", "110"])
    clients = open_streams(server.port, 300, params=[("topic", "fan/*")], timeout=20)
    try:
        assert all(c.status == 200 for c in clients)
        assert len(stream_pids(server)) == 3
        ids = [server.publish(f"fan/{i % 3}", {"n": i}) for i in range(20)]
        for client in clients:
            events = client.wait_events(20, timeout=20)
            assert [e.id for e in events] == ids
            assert [e.json()["n"] for e in events] == list(range(20))
        server.wait_for(lambda: fresh_health(server).json()["stream"]["total_messages"] >= 6000, timeout=5)
        assert fresh_health(server).json()["stream"]["active_connections"] == 300
    finally:
        close_all(clients)


@pytest.mark.timeout(60)
def test_the_connection_limit_is_for_the_whole_instance(redis_server: RedisServer, start_server: StartServer) -> None:
    # Pools of 14 make all three workers take some of the 40 connections (a
    # per-worker limit of 30 would then accept all 40). A short keep-alive
    # notices a closed stream at its next write.
    env = scale_env(redis_server, 3, STREAM_MAX_CONNECTIONS="30", STREAM_KEEPALIVE_INTERVAL="0.5")
    server = start_server(env, args=["--worker-connections", "14"])
    clients = open_streams(server.port, 40, params=[("topic", "limit")])
    try:
        statuses = sorted(c.status for c in clients)
        assert statuses == [200] * 30 + [503] * 10
        assert len(stream_pids(server)) == 3
        for _ in range(6):  # whichever worker answers
            stream = fresh_health(server).json()["stream"]
            assert stream["active_connections"] == 30
            assert stream["max_connections"] == 30
            assert stream["accepted"] == 30 and stream["rejected"] == 10
        close_all([c for c in clients if c.status == 200][:5])
        server.wait_for(lambda: fresh_health(server).json()["stream"]["active_connections"] == 25)
        more = open_streams(server.port, 6, params=[("topic", "limit")])
        clients += more
        assert sorted(c.status for c in more) == [200] * 5 + [503]
    finally:
        close_all(clients)


@pytest.mark.timeout(60)
def test_the_per_ip_limit_is_for_the_whole_instance(redis_server: RedisServer, start_server: StartServer) -> None:
    # Pools of 4: the 5 streams allowed from 127.0.0.1 cannot all sit in one worker.
    env = scale_env(redis_server, 3, STREAM_MAX_CONNECTIONS_PER_IP="5")
    server = start_server(env, args=["--worker-connections", "4"])
    clients = open_streams(server.port, 10, params=[("topic", "ip")])
    try:
        assert sorted(c.status for c in clients) == [200] * 5 + [429] * 5
        assert len(stream_pids(server)) >= 2
    finally:
        close_all(clients)


@pytest.mark.timeout(60)
def test_a_paused_redis_keeps_streams_open_and_nothing_is_lost(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    server = start_server(scale_env(redis_server, 2, STREAM_KEEPALIVE_INTERVAL="0.5"))
    workers = set(server.worker_pids())
    with SSEClient(server.port, params=[("topic", "out")]).open() as stream:
        before = [server.publish("out", i) for i in range(3)]
        stream.wait_events(3)
        redis_server.pause()
        try:
            down = server.wait_for(lambda: _health_if(server, 503), timeout=5)
            assert down["broker"] == "down" and down["status"] == "unhealthy"
            refused = server.http.post("/events", json={"topic": "out", "data": "during"})
            assert refused.status_code == 503
            assert "broker unavailable" in refused.json()["error"]
            no_job = create_job(server, "sleep", seconds=0)
            assert no_job.status_code == 503 and "unavailable" in no_job.json()["error"]
            keepalives = len(stream.comments)
            stream.wait(lambda c: len(c.comments) >= keepalives + 2, timeout=5)  # still open, still alive
            early = SSEClient(server.port, params=[("topic", "out")], headers={"Last-Event-ID": before[0]})
            with early.open():
                early.wait_eof(timeout=5)  # told to retry later, its position kept: no reset
                assert early.events == [] and early.retry is not None
        finally:
            redis_server.resume()
        up = server.wait_for(lambda: _health_if(server, 200), timeout=10)
        assert up["broker"] == "up"
        after = server.wait_for(lambda: _publish_if_accepted(server, "out", "after"), timeout=5)
        got = stream.wait(lambda c: c.events if c.events[-1].id == after else None, timeout=5)
        assert [e.id for e in got if e.data != "during"] == [*before, after]
    resumed = SSEClient(server.port, params=[("topic", "out")], headers={"Last-Event-ID": before[0]})
    with resumed.open():
        events = resumed.wait(lambda c: c.events if c.events and c.events[-1].id == after else None)
        assert [e.id for e in events if e.data != "during"] == [*before[1:], after]
    assert set(server.worker_pids()) == workers  # no worker crashed
    # An outage is logged, not a traceback per request or per pass: at most
    # the job runner's first failed pass (or start, for a worker that booted
    # meanwhile) in each worker.
    expected = {"job runner pass failed; retrying", "job store unavailable at start; the runner keeps trying"}
    tracebacks = [(r["pid"], r["message"]) for r in server.log_records() if "exc_info" in r]
    assert {message for _, message in tracebacks} <= expected, tracebacks
    assert len(tracebacks) == len(set(tracebacks))


@pytest.mark.timeout(60)
def test_jobs_and_history_survive_a_redis_restart_with_aof(start_redis: StartRedis, start_server: StartServer) -> None:
    redis = start_redis(appendonly=True)
    server = start_server(scale_env(redis, 2))
    ids = [server.publish("aof", i) for i in range(5)]
    done = create_job(server, "sleep", seconds=0, steps=1).json()
    server.wait_for(lambda: server.http.get(f"/jobs/{done['id']}").json()["status"] == "completed")
    redis.restart()
    server.wait_for(lambda: _health_if(server, 200), timeout=10)
    later = server.wait_for(lambda: _publish_if_accepted(server, "aof", 5), timeout=5)
    with SSEClient(server.port, params=[("topic", "aof")], headers={"Last-Event-ID": ids[0]}).open() as client:
        events = client.wait_events(5)
    assert [e.id for e in events] == [*ids[1:], later]
    assert server.http.get(f"/jobs/{done['id']}").json()["status"] == "completed"
    assert fresh_health(server).json()["jobs"]["completed"] == 1


@pytest.fixture
def two_hosts(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess, NginxProcess]]:
    if not nginx_support.available():
        pytest.skip("nginx is not installed (.ci/run installs it)")
    a = start_server(scale_env(redis_server, 1), name="host-a")
    b = start_server(scale_env(redis_server, 1), name="host-b")
    upstream, locations = readme_blocks(ROOT / "docs" / "scale-out.md", [a.port, b.port])
    proxy = NginxProcess(tmp_path / "nginx", upstream, locations).start()
    yield a, b, proxy
    proxy.stop()


@pytest.mark.timeout(60)
def test_a_job_created_on_one_host_is_seen_live_on_the_other(
    two_hosts: tuple[ServerProcess, ServerProcess, NginxProcess],
) -> None:
    a, b, _ = two_hosts
    with SSEClient(b.port, params=[("topic", "jobs/*")]).open() as on_b:
        on_b.wait_events(1, event="snapshot")
        job = create_job(a, "sleep", seconds=0.2, steps=2).json()
        on_b.wait(lambda c: any(e.json()["status"] == "completed" for e in c.of("job")), timeout=10)
        seen = [e.json() for e in on_b.of("job") if e.json()["id"] == job["id"]]
    assert [j["version"] for j in seen] == list(range(1, len(seen) + 1))  # every change, in order
    assert seen[0]["status"] == "pending" and seen[-1]["status"] == "completed"
    assert b.http.get(f"/jobs/{job['id']}").json() == seen[-1]


@pytest.mark.timeout(60)
def test_100_jobs_over_two_hosts_run_exactly_once_each(
    two_hosts: tuple[ServerProcess, ServerProcess, NginxProcess], tmp_path: Path
) -> None:
    a, b, proxy = two_hosts
    tally = tmp_path / "tally.txt"
    with httpx.Client(base_url=proxy.url(), timeout=10) as http:
        ids = [
            http.post("/jobs", json={"type": "tally", "params": {"path": str(tally), "seconds": 0.01}}).json()["id"]
            for _ in range(100)
        ]
    a.wait_for(lambda: fresh_health(a).json()["jobs"]["completed"] == 100, timeout=30)
    runs = [line.split() for line in tally.read_text().splitlines()]
    assert Counter(job_id for job_id, _ in runs) == Counter(ids)  # each job once
    assert {int(pid) for _, pid in runs} == {*a.worker_pids(), *b.worker_pids()}  # both hosts ran jobs


@pytest.mark.timeout(60)
def test_a_cancel_reaches_the_job_worker_running_the_job(
    two_hosts: tuple[ServerProcess, ServerProcess, NginxProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b, _ = two_hosts
    log = tmp_path / "worker.log"
    env = {**os.environ, **TEST_ENV, "REDIS_URL": redis_server.url, "JOBS_HANDLERS": HANDLERS}
    with open(log, "ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        a.wait_for(lambda: '"worker_started"' in log.read_text(), timeout=15)
        with SSEClient(b.port, params=[("topic", "jobs/*")]).open() as on_b:
            on_b.wait_events(1, event="snapshot")
            job = create_job(a, "offsite", seconds=30, steps=30).json()  # only python -m jobs.worker runs it
            on_b.wait(lambda c: any(e.json()["status"] == "in_progress" for e in c.of("job")), timeout=10)
            assert b.http.post(f"/jobs/{job['id']}/cancel", json={}).status_code == 200
            on_b.wait(lambda c: any(e.json()["status"] == "cancelled" for e in c.of("job")), timeout=10)
        final = a.http.get(f"/jobs/{job['id']}").json()
        assert final["status"] == "cancelled" and final["result"] is None  # stopped, long before its 30 s
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0


@pytest.mark.timeout(60)
def test_clients_of_a_killed_host_resume_through_nginx_without_loss(
    two_hosts: tuple[ServerProcess, ServerProcess, NginxProcess],
) -> None:
    a, b, proxy = two_hosts
    clients = open_streams(proxy.port, 10, params=[("topic", "ha")])
    resumed: list[SSEClient] = []
    try:
        on_a = [c for c in clients if c.response_headers["x-upstream"] == f"127.0.0.1:{a.port}"]
        assert 0 < len(on_a) < 10, "nginx should spread the streams over both hosts"
        first = [a.publish("ha", i) for i in range(2)]
        for client in clients:
            client.wait_events(2)
        a.kill()
        for client in on_a:
            client.wait_eof()
        missed = [b.publish("ha", i) for i in range(2, 5)]
        for client in on_a:
            assert client.last_id == first[-1]
            again = SSEClient(proxy.port, params=[("topic", "ha")], headers={"Last-Event-ID": client.last_id})
            resumed.append(again)
            again.open()
        for client in resumed:
            # nginx may try the dead host first, then passes the request on.
            assert client.response_headers["x-upstream"].split(", ")[-1] == f"127.0.0.1:{b.port}"
            assert [e.id for e in client.wait_events(3)] == missed
        for client in clients:
            if client not in on_a:
                assert [e.id for e in client.wait_events(5)] == [*first, *missed]
    finally:
        close_all(clients + resumed)


def _health_if(server: ServerProcess, status: int) -> dict[str, object] | None:
    response = fresh_health(server)
    return response.json() if response.status_code == status else None  # type: ignore[no-any-return]


def _publish_if_accepted(server: ServerProcess, topic: str, data: object) -> str | None:
    response = server.http.post("/events", json={"topic": topic, "data": data})
    return response.json()["id"] if response.status_code == 202 else None  # type: ignore[no-any-return]
