"""GET /metrics: Prometheus text, parsed by prometheus_client, with one and two workers.

The hot-path rule and the master's hooks are tested without a server in
``tests/unit/test_metrics.py``.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: ServerProcess) -> Samples:
    """One scrape on a fresh connection, so with several workers any of them may answer."""
    response = httpx.get(server.url("/metrics"), headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("jobstream_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def streams_by_worker(server: ServerProcess, tries: int = 30) -> dict[int, set[str]]:
    """User agents of the open streams per worker pid, from /admin/clients on fresh connections."""
    seen: dict[int, set[str]] = {}
    for _ in range(tries):
        body = httpx.get(server.url("/admin/clients"), headers={"Connection": "close"}, timeout=10).json()
        seen[body["worker_pid"]] = {c["user_agent"] for c in body["clients"]}
    return seen


@pytest.mark.timeout(60)
def test_metrics_count_streams_rejections_publishes_and_replays(start_server: StartServer) -> None:
    server = start_server({"STREAM_MAX_CONNECTIONS": "2", "STREAM_KEEPALIVE_INTERVAL": "0.5"})
    before = scrape(server)
    assert value(before, "jobstream_connections_active") == 0
    for status in ("pending", "in_progress", "completed", "cancelled", "error"):
        assert ("jobstream_jobs", frozenset({("status", status)})) in before
    first = SSEClient(server.port, params=[("topic", "m")]).open()
    second = SSEClient(server.port, params=[("topic", "m")]).open()
    refused = SSEClient(server.port, params=[("topic", "m")]).open()
    try:
        assert refused.status == 503
        ids = [server.publish("m", n) for n in range(3)]
        first.wait_events(3)
        second.wait_events(3)
        samples = scrape(server)
        assert value(samples, "jobstream_connections_active") == 2
        assert value(samples, "jobstream_connections_opened_total") == 2
        assert value(samples, "jobstream_connections_rejected_total", reason="capacity") == 1
        assert value(samples, "jobstream_events_published_total") == 3
        assert value(samples, "jobstream_broadcast_latency_seconds_count") == 3
        assert value(samples, "jobstream_events_delivered_total") == 6  # 3 events x 2 streams
        first.close()
        second.close()
        server.wait_for(lambda: server.health()["stream"]["active_connections"] == 0, timeout=15)
        with SSEClient(server.port, params=[("topic", "m")], headers={"Last-Event-ID": ids[0]}).open() as resumed:
            resumed.wait_events(2)
        with SSEClient(server.port, params=[("topic", "m")], headers={"Last-Event-ID": "garbage"}).open() as reset:
            reset.wait_events(1, event="reset")
        server.wait_for(lambda: server.health()["stream"]["active_connections"] == 0, timeout=15)
        samples = scrape(server)
        assert value(samples, "jobstream_replays_total", trigger="reconnect") == 1
        assert value(samples, "jobstream_resets_total", reason="malformed") == 1
        assert value(samples, "jobstream_connections_closed_total", reason="client") == 4
        assert value(samples, "jobstream_connections_active") == 0
        assert value(samples, "jobstream_events_delivered_total") == 6 + 2
    finally:
        for c in (first, second, refused):
            c.close()


@pytest.mark.timeout(60)
def test_metrics_count_jobs_by_status_and_time_finished_jobs(start_server: StartServer) -> None:
    server = start_server()
    ids = []
    for body in ({"type": "sleep", "params": {"seconds": 0.2, "steps": 2}}, {"type": "fail"}):
        response = server.http.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    server.wait_for(lambda: all(server.http.get(f"/jobs/{i}").json()["status"] in ("completed", "error") for i in ids))
    samples = scrape(server)
    assert value(samples, "jobstream_jobs", status="completed") == 1
    assert value(samples, "jobstream_jobs", status="error") == 1
    assert value(samples, "jobstream_job_duration_seconds_count", status="completed") == 1
    assert value(samples, "jobstream_job_duration_seconds_count", status="error") == 1
    assert value(samples, "jobstream_job_duration_seconds_sum", status="completed") >= 0.2
    assert value(samples, "jobstream_events_published_total") >= 4  # created, started, ... finished


@pytest.mark.timeout(90)
def test_metrics_add_up_across_two_workers_and_drop_a_dead_one(start_server: StartServer) -> None:
    # Two workers without Redis (each its own fan-out; history off so they
    # share no SQLite window): enough to show the multiprocess merge. The
    # settings refuse WEB_CONCURRENCY=2 without REDIS_URL, so --workers 2.
    server = start_server({"STREAM_HISTORY_SIZE": "0", "STREAM_KEEPALIVE_INTERVAL": "1"}, args=["--workers", "2"])
    clients: dict[str, SSEClient] = {}
    try:
        # Each stream is tagged by its User-Agent, so /admin/clients tells
        # which worker holds it; open until both hold at least two.
        while len(clients) < 60:
            for _ in range(4):
                tag = f"mw{len(clients)}"
                clients[tag] = SSEClient(server.port, params=[("topic", "mw")], headers={"User-Agent": tag}).open()
            held = streams_by_worker(server)
            both = len(held) == 2 and all(len(tags) >= 2 for tags in held.values())
            if both and set().union(*held.values()) == set(clients):
                break
        assert len(held) == 2 and all(len(tags) >= 2 for tags in held.values()), held
        opened = len(clients)
        for _ in range(6):  # whichever worker answers, the totals are the instance's
            samples = scrape(server)
            assert value(samples, "jobstream_connections_active") == opened
            assert value(samples, "jobstream_connections_opened_total") == opened

        for n in range(10):
            server.publish("mw", n)

        def delivered_matches() -> bool:
            for c in clients.values():
                try:
                    c.pump(0.02)
                except TimeoutError:
                    pass
            received = sum(len(c.events) for c in clients.values())
            return received > 0 and value(scrape(server), "jobstream_events_delivered_total") == received

        server.wait_for(delivered_matches, timeout=10, interval=0.2)
        assert value(scrape(server), "jobstream_events_published_total") == 10

        (victim, doomed), (_, kept) = sorted(held.items())
        for tags in (doomed, kept):  # one stream leaves each worker
            clients[sorted(tags)[0]].close()
        server.wait_for(
            lambda: value(scrape(server), "jobstream_connections_closed_total", reason="client") == 2, timeout=10
        )
        assert value(scrape(server), "jobstream_connections_active") == opened - 2

        os.kill(victim, signal.SIGKILL)
        # Its streams end with it; child_exit removes its live gauge, its
        # counters stay (counters never go down).
        server.wait_for(lambda: value(scrape(server), "jobstream_connections_active") == len(kept) - 1, timeout=20)
        assert value(scrape(server), "jobstream_connections_opened_total") == opened
        # Let the replacement worker finish booting: a SIGTERM that reaches a
        # worker between fork and its signal set-up is lost (gunicorn), and
        # the teardown would wait for the kill timeout.
        server.wait_for(lambda: sum(r.get("event") == "worker_started" for r in server.log_records()) == 3)
    finally:
        for c in clients.values():
            c.close()
