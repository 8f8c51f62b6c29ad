"""The job API and job events against a real gunicorn gevent server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from streaming.core.ids import parse_id
from tests.conftest import StartServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient, SSEEvent

HANDLERS = {"JOBS_HANDLERS": "tests.support.job_handlers"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("jobs-api"), env=HANDLERS)
    proc.start()
    yield proc
    proc.stop(timeout=10)


def create(server: ServerProcess, type: str, **body: Any) -> dict[str, Any]:
    response = server.http.post("/jobs", json={"type": type, **body})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    return job


def job_events(client: SSEClient, job_id: str) -> list[dict[str, Any]]:
    return [e.json() for e in client.of("job") if e.json()["id"] == job_id]


def until_status(job_id: str, *statuses: str) -> Any:
    return lambda c: any(j["status"] in statuses for j in job_events(c, job_id))


BIG = b'{"type": "sleep", "name": "' + b"x" * 70_000 + b'"}'
BAD_CREATE = [
    ("wrong content type", b'{"type": "sleep"}', "text/plain", 415, "Content-Type"),
    ("form", b"type=sleep", "application/x-www-form-urlencoded", 415, "Content-Type"),
    ("over 64 KiB", BIG, "application/json", 413, "limit"),
    ("not json", b"{type", "application/json", 400, "not valid JSON"),
    ("array", b'["sleep"]', "application/json", 400, "JSON object"),
    ("string", b'"sleep"', "application/json", 400, "JSON object"),
    ("missing type", b"{}", "application/json", 400, "type"),
    ("type not str", b'{"type": 1}', "application/json", 400, "type"),
    ("unknown type", b'{"type": "teleport"}', "application/json", 400, "unknown type 'teleport'"),
    ("unknown field", b'{"type": "sleep", "when": 1}', "application/json", 400, "when"),
    ("params not object", b'{"type": "sleep", "params": [1]}', "application/json", 400, "params"),
    ("name not str", b'{"type": "sleep", "name": 5}', "application/json", 400, "name"),
    ("name too long", b'{"type": "sleep", "name": "' + b"n" * 201 + b'"}', "application/json", 400, "name"),
    ("seconds negative", b'{"type": "sleep", "params": {"seconds": -1}}', "application/json", 400, "seconds"),
    ("seconds too big", b'{"type": "sleep", "params": {"seconds": 3601}}', "application/json", 400, "seconds"),
    ("seconds string", b'{"type": "sleep", "params": {"seconds": "5"}}', "application/json", 400, "seconds"),
    ("seconds bool", b'{"type": "sleep", "params": {"seconds": true}}', "application/json", 400, "seconds"),
    ("steps zero", b'{"type": "sleep", "params": {"steps": 0}}', "application/json", 400, "steps"),
    ("steps float", b'{"type": "sleep", "params": {"steps": 2.5}}', "application/json", 400, "steps"),
    ("steps too many", b'{"type": "sleep", "params": {"steps": 1001}}', "application/json", 400, "steps"),
    ("unknown param", b'{"type": "sleep", "params": {"sec": 1}}', "application/json", 400, "sec"),
    ("fail message type", b'{"type": "fail", "params": {"message": 3}}', "application/json", 400, "message"),
    ("fail unknown param", b'{"type": "fail", "params": {"code": 3}}', "application/json", 400, "code"),
]


@pytest.mark.parametrize(("case", "body", "ctype", "status", "words"), BAD_CREATE, ids=[b[0] for b in BAD_CREATE])
def test_bad_job_requests_get_a_json_4xx_naming_the_problem(
    server: ServerProcess, case: str, body: bytes, ctype: str, status: int, words: str
) -> None:
    response = server.http.post("/jobs", content=body, headers={"Content-Type": ctype})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]


BAD_LIST = [("status=done", "status"), ("limit=0", "limit"), ("limit=501", "limit"), ("limit=x", "limit")]


@pytest.mark.parametrize(("query", "words"), [*BAD_LIST, ("cursor=nonsense", "cursor")])
def test_bad_list_parameters_are_400_naming_the_parameter(server: ServerProcess, query: str, words: str) -> None:
    response = server.http.get(f"/jobs?{query}")
    assert response.status_code == 400 and words in response.json()["error"]


def test_defaults_float_seconds_and_name(server: ServerProcess) -> None:
    job = create(server, "sleep", params={"seconds": 0.25})
    assert job["params"] == {"seconds": 0.25, "steps": 10} and job["name"] == "sleep"
    assert (job["status"], job["version"], job["progress"], job["result"]) == ("pending", 1, 0.0, None)
    assert job["created_at"].endswith("Z") and job["started_at"] is None
    named = create(server, "fail", name="on purpose")
    assert named["params"] == {"message": "failed on purpose"} and named["name"] == "on purpose"


@pytest.mark.timeout(30)
def test_sleep_job_lifecycle_on_the_stream(server: ServerProcess) -> None:
    with SSEClient(server.port, params=[("topic", "jobs/*")]).open() as client:
        client.wait_events(1, event="snapshot")
        job = create(server, "sleep", params={"seconds": 1, "steps": 4})
        client.wait(until_status(job["id"], "completed"))
        seen = job_events(client, job["id"])
    statuses = [j["status"] for j in seen]
    assert statuses[:2] == ["pending", "in_progress"] and statuses[-1] == "completed"
    assert set(statuses[2:-1]) == {"in_progress"}
    assert [j["version"] for j in seen] == list(range(1, len(seen) + 1))
    # Steps are 0.25 s apart, so none is coalesced away, except that the last
    # report may arrive together with the return and ride on `completed`.
    progress = [(j["progress"], j["message"]) for j in seen[2:]]
    assert progress[:3] == [(0.25, "step 1/4"), (0.5, "step 2/4"), (0.75, "step 3/4")]
    assert progress[-1] == (1.0, "step 4/4")
    final = seen[-1]
    assert final["result"] == {"slept": 1, "steps": 4} and final["error"] is None
    assert final["started_at"] and final["finished_at"] and final["finished_at"] >= final["started_at"]
    assert server.http.get(f"/jobs/{job['id']}").json() == final


@pytest.mark.timeout(30)
def test_fail_job_ends_in_error_with_its_message(server: ServerProcess) -> None:
    with SSEClient(server.port, params=[("topic", "jobs/*")]).open() as client:
        job = create(server, "fail", params={"message": "as asked"})
        client.wait(until_status(job["id"], "error"))
        final = job_events(client, job["id"])[-1]
    assert (final["status"], final["error"], final["result"]) == ("error", "as asked", None)


@pytest.mark.timeout(30)
def test_running_job_is_cancelled_within_a_step(server: ServerProcess) -> None:
    with SSEClient(server.port, params=[("topic", "jobs/*")]).open() as client:
        job = create(server, "sleep", params={"seconds": 100, "steps": 1000})  # 0.1 s per step
        client.wait(lambda c: len(job_events(c, job["id"])) >= 3)  # created, started, progress
        response = server.http.post(f"/jobs/{job['id']}/cancel", json={})
        assert response.status_code == 200 and response.json()["status"] == "in_progress"
        client.wait(until_status(job["id"], "cancelled"), timeout=2)
        final = job_events(client, job["id"])[-1]
    assert 0 < final["progress"] < 0.1 and final["finished_at"]
    again = server.http.post(f"/jobs/{job['id']}/cancel", json={})
    assert again.status_code == 409 and "cancelled" in again.json()["error"]


@pytest.mark.timeout(30)
def test_progress_events_are_coalesced_to_ten_per_second(server: ServerProcess) -> None:
    with SSEClient(server.port, params=[("topic", "jobs/*")]).open() as client:
        job = create(server, "chatty", params={"reports": 3000, "seconds": 1.5})
        client.wait(until_status(job["id"], "completed"), timeout=15)
        events = [e for e in client.of("job") if e.json()["id"] == job["id"]]
    progress = [e for e in events if e.json()["status"] == "in_progress"][1:]
    stamps = [parse_id(e.id)[0] for e in progress]  # type: ignore[index]
    # The handler's pace depends on the machine's load; the rate is what is bounded.
    span_seconds = (stamps[-1] - stamps[0]) / 1000
    assert 5 <= len(progress) <= 10 * span_seconds + 2, (len(progress), span_seconds)
    for i in range(len(stamps)):
        window = [s for s in stamps[i:] if s - stamps[i] < 1000]
        assert len(window) <= 11, stamps  # 10 per second, with a millisecond of jitter at the edges
    assert events[-1].json()["status"] == "completed"  # the state change is never coalesced


def test_unknown_jobs_are_404_and_finished_jobs_409(server: ServerProcess) -> None:
    assert server.http.get("/jobs/nope").status_code == 404
    assert server.http.post("/jobs/nope/cancel", json={}).status_code == 404
    assert server.http.get("/jobs/nope").json()["error"]
    job = create(server, "fail")
    server.wait_for(lambda: server.http.get(f"/jobs/{job['id']}").json()["status"] == "error")
    response = server.http.post(f"/jobs/{job['id']}/cancel", json={})
    assert response.status_code == 409 and "already error" in response.json()["error"]
    assert server.http.delete(f"/jobs/{job['id']}").status_code == 405


def test_list_pages_newest_first_and_filters_by_status(server: ServerProcess) -> None:
    ids = [create(server, "fail", name=f"page {i}")["id"] for i in range(5)]
    seen: list[str] = []
    url = "/jobs?limit=2"
    while True:
        body = server.http.get(url).json()
        seen += [j["id"] for j in body["jobs"]]
        if body["next_cursor"] is None or len(seen) >= 5:
            break
        url = f"/jobs?limit=2&cursor={body['next_cursor']}"
    assert seen[:5] == ids[::-1]
    server.wait_for(lambda: all(server.http.get(f"/jobs/{i}").json()["status"] == "error" for i in ids))
    errors = server.http.get("/jobs?status=error&limit=500").json()["jobs"]
    assert set(ids) <= {j["id"] for j in errors} and {j["status"] for j in errors} == {"error"}


def snapshot_of(server: ServerProcess, params: list[tuple[str, str]], headers: dict[str, str] | None = None) -> Any:
    with SSEClient(server.port, params=params, headers=headers or {}).open() as client:
        client.wait(lambda c: c.comments)
        first: SSEEvent = client.wait(lambda c: c.events[:1] or (len(c.comments) > 1 and [SSEEvent("none")]))[0]
    return first.json() if first.event == "snapshot" else None


@pytest.mark.timeout(30)
def test_snapshot_on_connect_holds_the_jobs_the_filter_matches(server: ServerProcess) -> None:
    a, b = create(server, "fail", name="snap a"), create(server, "fail", name="snap b")
    everything = snapshot_of(server, [])
    ids = [j["id"] for j in everything["jobs"]]
    assert ids.index(b["id"]) < ids.index(a["id"])  # newest first
    assert len(ids) <= 500
    assert [j["id"] for j in snapshot_of(server, [("topic", f"jobs/{a['id']}")])["jobs"]] == [a["id"]]
    assert ids == [j["id"] for j in snapshot_of(server, [("topic", "jobs/*")])["jobs"]]
    assert ids == [j["id"] for j in snapshot_of(server, [], {"Last-Event-ID": ""})["jobs"]]
    prefix = snapshot_of(server, [("topic", f"jobs/{a['id'][:12]}*")])
    assert a["id"] in [j["id"] for j in prefix["jobs"]]
    with SSEClient(server.port, params=[("topic", "builds/*")]).open() as other:
        other.wait(lambda c: c.comments)
        server.publish("builds/1", "probe")
        assert [e.event for e in other.wait_events(1)] == ["message"]  # no snapshot before it


@pytest.mark.timeout(30)
def test_a_stream_opened_mid_job_misses_no_version(server: ServerProcess) -> None:
    job = create(server, "sleep", params={"seconds": 1, "steps": 10})
    server.wait_for(lambda: server.http.get(f"/jobs/{job['id']}").json()["version"] >= 3)
    with SSEClient(server.port, params=[("topic", f"jobs/{job['id']}")]).open() as client:
        client.wait(until_status(job["id"], "completed"))
        snapshot = client.of("snapshot")[0].json()["jobs"][0]
        live = [j["version"] for j in job_events(client, job["id"]) if j["version"] > snapshot["version"]]
    assert snapshot["status"] == "in_progress"
    assert live == list(range(snapshot["version"] + 1, live[-1] + 1))


def test_health_counts_match_the_store(server: ServerProcess) -> None:
    listed: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = server.http.get("/jobs", params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
        listed += body["jobs"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    counts = server.health()["jobs"]
    assert counts["total"] == len(listed)
    for status in ("pending", "in_progress", "completed", "cancelled", "error"):
        assert counts[status] == sum(1 for j in listed if j["status"] == status), status


@pytest.mark.timeout(60)
def test_pending_job_is_cancelled_at_once(start_server: StartServer) -> None:
    server = start_server({"JOBS_CONCURRENCY": "1"})
    with SSEClient(server.port, params=[("topic", "jobs/*")]).open() as client:
        blocker = create(server, "sleep", params={"seconds": 60, "steps": 600})
        queued = create(server, "sleep", params={"seconds": 1})
        client.wait(until_status(blocker["id"], "in_progress"))
        response = server.http.post(f"/jobs/{queued['id']}/cancel", json={})
        assert response.status_code == 200
        cancelled = response.json()
        assert (cancelled["status"], cancelled["version"], cancelled["started_at"]) == ("cancelled", 2, None)
        client.wait(until_status(queued["id"], "cancelled"))
        assert server.http.post(f"/jobs/{queued['id']}/cancel", json={}).status_code == 409
        server.http.post(f"/jobs/{blocker['id']}/cancel", json={})
        client.wait(until_status(blocker["id"], "cancelled"))
    assert [j["status"] for j in job_events(client, queued["id"])] == ["pending", "cancelled"]
    assert json.loads(json.dumps(server.health()["jobs"]))["cancelled"] == 2
