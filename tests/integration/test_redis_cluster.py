"""Redis Cluster: the scale-out essentials on three real primaries.

Two gunicorn servers share one 3-primary cluster (one by ``redis+cluster://``,
the other by ``REDIS_CLUSTER=1`` and one node's ``redis://`` URL): events
cross between them, ``Last-Event-ID`` replays, a job created on one is run
and seen on the other (the Lua scripts run on the cluster), and every key
Jobstream wrote lives in one slot on one node.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.redis_url import parse_redis_url
from streaming.scaleout.redis_client import Durable, NotReplicated, connect
from streaming.scaleout.redis_keys import STREAM_KEY
from tests.conftest import StartServer
from tests.support import redis_ha
from tests.support.redis_ha import ClusterGroup
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

HANDLERS = "tests.support.job_handlers"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    if not redis_ha.available():
        pytest.skip("redis-server and redis-cli are not installed (.ci/run installs them)")
    group = ClusterGroup(tmp_path_factory.mktemp("cluster"))
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture
def two_servers(cluster: ClusterGroup, start_server: StartServer) -> tuple[ServerProcess, ServerProcess]:
    a = start_server({"REDIS_URL": cluster.url, "JOBS_HANDLERS": HANDLERS}, name="a")
    node = cluster.nodes[1]
    b = start_server({"REDIS_URL": f"redis://127.0.0.1:{node.port}", "REDIS_CLUSTER": "1"}, name="b")
    return a, b


@pytest.mark.timeout(40)
def test_events_and_jobs_cross_servers_on_a_cluster(
    cluster: ClusterGroup, two_servers: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = two_servers
    with SSEClient(b.port, params=[("topic", "c/*"), ("topic", "jobs/*")]).open() as on_b:
        on_b.wait_events(1, event="snapshot")
        ids = [a.publish(f"c/{i}", {"n": i}) for i in range(5)]
        on_b.wait(lambda c: len(c.of("message")) >= 5, timeout=10)
        assert [e.id for e in on_b.of("message")] == ids
        job = a.http.post("/jobs", json={"type": "sleep", "params": {"seconds": 0.1, "steps": 2}}).json()
        on_b.wait(lambda c: any(e.json()["status"] == "completed" for e in c.of("job")), timeout=15)
        seen = [e.json() for e in on_b.of("job") if e.json()["id"] == job["id"]]
    assert seen[0]["status"] == "pending" and seen[-1]["status"] == "completed"
    assert [j["version"] for j in seen] == list(range(1, len(seen) + 1))  # every change, in order
    assert b.http.get(f"/jobs/{job['id']}").json() == seen[-1]
    assert b.health()["jobs"]["completed"] >= 1
    # Resumed on the other server: exactly what came after the id it had.
    with SSEClient(a.port, params=[("topic", "c/*")], headers={"Last-Event-ID": ids[1]}).open() as resumed:
        assert [e.id for e in resumed.wait_events(3)] == ids[2:]
    # One slot: every key is on the node serving {jobstream}, none elsewhere.
    home = cluster.node_of("{jobstream}:events")
    for node in cluster.nodes:
        with node.client() as client:
            keys = client.keys("*")
        if node is home:
            assert "{jobstream}:events" in keys and f"{{jobstream}}:job:{job['id']}" in keys
        else:
            assert keys == [], f"keys outside the {{jobstream}} slot on {node.port}: {keys}"


@pytest.mark.timeout(30)
def test_a_cancel_from_the_other_server_stops_a_running_job_on_a_cluster(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_servers
    job = a.http.post("/jobs", json={"type": "sleep", "params": {"seconds": 30, "steps": 30}}).json()
    a.wait_for(lambda: b.http.get(f"/jobs/{job['id']}").json()["status"] == "in_progress", timeout=10)
    assert b.http.post(f"/jobs/{job['id']}/cancel", json={}).status_code in (200, 202)
    a.wait_for(lambda: a.http.get(f"/jobs/{job['id']}").json()["status"] == "cancelled", timeout=10)
    listed = b.http.get("/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]


@pytest.mark.timeout(20)
def test_wait_goes_to_the_primary_of_the_slot(cluster: ClusterGroup) -> None:
    # These primaries have no replicas: one required is refused, none required passes.
    strict = parse_redis_url(cluster.url).with_durability(1, 200)
    client = connect(strict)
    try:
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            Durable(client, strict, STREAM_KEY).write(lambda c: c.set("{jobstream}:probe", "1"))
        lenient = strict.with_durability(0, 200)
        assert Durable(client, lenient, STREAM_KEY).write(lambda c: c.get("{jobstream}:probe")) == "1"
    finally:
        client.delete("{jobstream}:probe")
        client.close()
