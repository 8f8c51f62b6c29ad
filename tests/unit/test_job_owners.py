"""Jobs with owners, in process: who owns a new job, who sees and cancels it
through the jobs API, what an owned job's events reach (fan-out, replay,
SQLite history, the snapshot), and ``GET /me``. Real browsers and two Redis
workers are in ``tests/integration/test_board_owners.py``."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from jobs.sqlite_store import SqliteJobStore
from server.tokens import OPERATOR, Grant
from streaming.core.client import Client
from streaming.core.events import Delivery, Event
from streaming.core.history import SqliteHistory
from streaming.core.ids import format_id
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.core.writer import StreamWriter
from streaming.ops.service import StreamingService
from tests.support.apps import app_in
from tests.support.tokens import SECRET, mint

API_TOKEN = "operator-key"
ALICE = Grant(sub="alice", exp=2e9, subscribe=("jobs/*",))
BOB = Grant(sub="bob", exp=2e9, subscribe=("jobs/*",))
ADMIN = Grant(sub="root", exp=2e9, subscribe=("news",), admin=True)
SLEEP = {"type": "sleep", "params": {"seconds": 60}}


def _app(tmp_path: Path, **settings: Any) -> Iterator[Flask]:
    yield from app_in(tmp_path, history_size=100, **settings)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from _app(tmp_path, api_token=API_TOKEN, jwt_secret=SECRET, stream_auth="optional")


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Minted at import, so they must outlive a full suite run (mint's default is 5 min).
DAY = 24 * 3600
ALICE_T = mint(sub="alice", subscribe=["jobs/*"], ttl=DAY)
BOB_T = mint(sub="bob", subscribe=["jobs/*"], ttl=DAY)
ADMIN_T = mint(sub="root", admin=True, ttl=DAY)


def _create(http: FlaskClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    created = http.post("/jobs", json={**SLEEP, **body}, headers=headers)
    assert created.status_code == 201, created.json
    job: dict[str, Any] = created.json  # type: ignore[assignment]
    return job


def _listed(http: FlaskClient, headers: dict[str, str] | None = None, query: str = "") -> list[str]:
    listed = http.get(f"/jobs?limit=1{query}", headers=headers or {})
    assert listed.status_code == 200, listed.json
    ids, body = [], listed.json
    while True:
        ids += [job["id"] for job in body["jobs"]]  # type: ignore[index]
        if body["next_cursor"] is None:  # type: ignore[index]
            return ids
        body = http.get(f"/jobs?limit=1&cursor={body['next_cursor']}{query}", headers=headers or {}).json  # type: ignore[index]


def test_a_job_belongs_to_the_token_that_created_it(app: Flask) -> None:
    http = app.test_client()
    assert _create(http, _as(ALICE_T))["owner"] == "alice"
    assert _create(http, _as(API_TOKEN))["owner"] is None
    assert _create(http, _as(API_TOKEN), owner="bob")["owner"] == "bob"  # a web app's backend, for its user
    assert _create(http, _as(ADMIN_T), owner="bob")["owner"] == "bob"
    assert _create(http, _as(ALICE_T), owner="alice")["owner"] == "alice"
    someone_else = http.post("/jobs", json={**SLEEP, "owner": "bob"}, headers=_as(ALICE_T))
    assert someone_else.status_code == 403 and "owner" in someone_else.json["error"]  # type: ignore[index]
    for bad in ("", "   ", 7, ["bob"], "x" * 201, "\ud800"):
        refused = http.post("/jobs", json={**SLEEP, "owner": bad}, headers=_as(API_TOKEN))
        assert refused.status_code == 400 and "owner" in refused.json["error"], bad  # type: ignore[index]


def test_each_reader_lists_and_gets_only_the_jobs_it_may_see(app: Flask) -> None:
    http = app.test_client()
    alices = [_create(http, _as(ALICE_T))["id"] for _ in range(3)]
    bobs = [_create(http, _as(BOB_T))["id"] for _ in range(2)]
    shared = _create(http, _as(API_TOKEN))["id"]
    assert _listed(http, _as(ALICE_T)) == [shared, *alices[::-1]]
    assert _listed(http, _as(BOB_T)) == [shared, *bobs[::-1]]
    assert _listed(http) == [shared]  # anonymous, in optional mode
    everything = [shared, *bobs[::-1], *alices[::-1]]
    assert _listed(http, _as(ADMIN_T)) == everything == _listed(http, _as(API_TOKEN))
    for status in ("pending", "in_progress"):  # exact pages by status: tests/support/job_store_contract.py
        assert set(_listed(http, _as(ALICE_T), f"&status={status}")) <= {shared, *alices}
    http.set_cookie("jobstream_token", BOB_T)  # what a browser sends
    assert _listed(http) == [shared, *bobs[::-1]]
    http.delete_cookie("jobstream_token")
    hidden, missing = http.get(f"/jobs/{bobs[0]}", headers=_as(ALICE_T)), http.get("/jobs/0000", headers=_as(ALICE_T))
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json == {"error": f"no job {bobs[0]!r}"}  # the same words as for no job at all
    assert http.get(f"/jobs/{bobs[0]}", headers=_as(BOB_T)).json["owner"] == "bob"  # type: ignore[index]
    assert http.get(f"/jobs/{shared}").status_code == 200
    assert http.get(f"/jobs/{alices[0]}").status_code == 404  # anonymous


def test_only_the_owner_and_admins_cancel_an_owned_job(app: Flask) -> None:
    http = app.test_client()
    alices = _create(http, _as(ALICE_T))["id"]
    shared = _create(http, _as(API_TOKEN))["id"]
    refused = http.post(f"/jobs/{alices}/cancel", json={}, headers=_as(BOB_T))
    assert refused.status_code == 404 and refused.json == {"error": f"no job {alices!r}"}
    assert http.get(f"/jobs/{alices}", headers=_as(ALICE_T)).json["status"] != "cancelled"  # type: ignore[index]
    assert http.post(f"/jobs/{shared}/cancel", json={}, headers=_as(BOB_T)).status_code == 200
    assert http.post(f"/jobs/{alices}/cancel", json={}, headers=_as(ALICE_T)).status_code == 200
    admins = _create(http, _as(ALICE_T))["id"]
    assert http.post(f"/jobs/{admins}/cancel", json={}, headers=_as(ADMIN_T)).status_code == 200


def test_required_mode_refuses_anonymous_and_bad_tokens_on_job_reads(tmp_path: Path) -> None:
    for application in _app(tmp_path, jwt_secret=SECRET, stream_auth="required"):
        http = application.test_client()
        anonymous = http.get("/jobs")
        assert anonymous.status_code == 401 and anonymous.json == {"error": "missing token"}
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        expired = http.get("/jobs/abc", headers=_as(mint(ttl=-60)))
        assert expired.status_code == 401 and expired.json == {"error": "invalid token: expired"}
        assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
        assert http.get("/jobs", headers=_as(ALICE_T)).status_code == 200


def test_with_stream_auth_off_owners_are_recorded_but_every_reader_sees_all(tmp_path: Path) -> None:
    for application in _app(tmp_path, jwt_secret=SECRET):
        http = application.test_client()
        alices = _create(http, _as(ALICE_T))
        assert alices["owner"] == "alice"
        assert _listed(http) == [alices["id"]] and http.get(f"/jobs/{alices['id']}").status_code == 200
        service: StreamingService = application.extensions["jobstream"]
        assert not service.broker.replay((0, 0), TopicFilter(["jobs/*"]), None)[0].private  # public, as before


def test_health_counts_every_job_whoever_asks(app: Flask) -> None:
    http = app.test_client()
    for token in (ALICE_T, BOB_T, API_TOKEN):
        _create(http, _as(token))
    assert http.get("/health").json["jobs"]["total"] == 3  # type: ignore[index]


def test_the_snapshot_holds_only_the_jobs_its_stream_may_see(app: Flask) -> None:
    http = app.test_client()
    alices, bobs = _create(http, _as(ALICE_T))["id"], _create(http, _as(BOB_T))["id"]
    shared = _create(http, _as(API_TOKEN))["id"]
    view = app.extensions["jobstream"].jobs
    topics = TopicFilter(["jobs/*"])

    def ids(grant: Grant | None) -> list[str]:
        return [job["id"] for job in view.snapshot(topics, grant)["jobs"]]

    assert ids(ALICE) == [shared, alices] and ids(BOB) == [shared, bobs] and ids(None) == [shared]
    assert ids(ADMIN) == ids(OPERATOR) == [shared, bobs, alices]
    assert [j["id"] for j in view.snapshot(TopicFilter([f"jobs/{bobs}"]), ALICE)["jobs"]] == []


def _event(ms: int, owner: str | None) -> Event:
    return Event.create(format_id((ms, 0)), f"jobs/{ms}", "job", f"{ms}", Delivery(owner=owner))


def _reader(grant: Grant | None) -> Client:
    return Client(StreamWriter(queue.Queue(maxsize=50)), "10.0.0.1", "t", TopicFilter(["jobs/*"]), grant=grant)


def test_an_owned_event_reaches_its_owner_and_admins_only() -> None:
    registry = Registry(max_connections=10, send_timeout_seconds=5, keepalive_seconds=30)
    readers = {"anonymous": None, "alice": ALICE, "bob": BOB, "admin": ADMIN, "operator": OPERATOR}
    clients = {who: _reader(grant) for who, grant in readers.items()}
    for client in clients.values():
        assert registry.admit(client) is None
    owned, unowned = _event(1, "alice"), _event(2, None)
    assert owned.private and not unowned.private and owned.wire == Event.create(owned.id, owned.topic, "job", "1").wire
    assert registry.fanout(owned) == 3 and registry.fanout(unowned) == 5
    got = {who: [c.writer.queue.get_nowait().data for _ in range(c.writer.queue.qsize())] for who, c in clients.items()}
    assert got == {"anonymous": ["2"], "alice": ["1", "2"], "bob": ["2"], "admin": ["1", "2"], "operator": ["1", "2"]}
    # Bob's subscribe patterns match jobs/1; ownership, not patterns, decides.
    assert BOB.may_subscribe("jobs/1") and not clients["bob"].may_read(owned)


def test_replay_and_the_sqlite_history_keep_an_events_owner(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    stored = SqliteHistory(path, 10)
    for event in (_event(1, "alice"), _event(2, "bob"), _event(3, None)):
        stored.append(event)
    stored.close()
    history = SqliteHistory(path, 10).load()
    alice, bob = _reader(ALICE), _reader(BOB)
    assert [e.data for e in history.after((0, 0), TopicFilter(), alice.may_read)] == ["1", "3"]
    assert [e.data for e in history.after((0, 0), TopicFilter(), bob.may_read)] == ["2", "3"]
    assert [e.data for e in history.after((0, 0), TopicFilter(), None)] == ["3"]
    assert [e.data for e in history.after((0, 0), TopicFilter(), _reader(ADMIN).may_read)] == ["1", "2", "3"]


def test_files_from_before_owners_open_with_every_job_and_event_unowned(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE stream_events (ms INTEGER NOT NULL, seq INTEGER NOT NULL, topic TEXT NOT NULL,"
        " event TEXT NOT NULL, data TEXT NOT NULL, private INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (ms, seq)) WITHOUT ROWID"
    )
    db.execute("INSERT INTO stream_events VALUES (1, 0, 'jobs/x', 'job', '{}', 0)")
    db.commit()
    db.close()
    events = SqliteHistory(path, 10).load().after((0, 0), TopicFilter(), None)
    assert [(e.topic, e.owner) for e in events] == [("jobs/x", None)]
    store = SqliteJobStore(str(tmp_path / "jobs.db"))
    job = store.create("sleep", "old", {})
    store.close()
    legacy = sqlite3.connect(str(tmp_path / "jobs.db"))
    legacy.execute("ALTER TABLE jobs DROP COLUMN owner_sub")  # as the file was before owners
    legacy.commit()
    legacy.close()
    reopened = SqliteJobStore(str(tmp_path / "jobs.db"))
    assert reopened.get(job.id).owner is None  # type: ignore[union-attr]
    assert reopened.create("sleep", "new", {}, "alice").owner == "alice"
    reopened.close()


def test_me_says_who_the_request_is(app: Flask) -> None:
    http = app.test_client()
    assert http.get("/me").json == {
        "signed_in": False, "sub": None, "admin": False, "subscribe": [], "publish": [], "exp": None,
        "stream_auth": "optional",
    }  # fmt: skip
    http.set_cookie("jobstream_token", ALICE_T)
    me = http.get("/me").json
    assert me["signed_in"] and me["sub"] == "alice" and me["subscribe"] == ["jobs/*"] and me["exp"] > 0  # type: ignore[index]
    assert http.get("/me", headers=_as(API_TOKEN)).json["admin"] is True  # type: ignore[index]
    bad = http.get("/me", headers=_as(mint(key="another-secret-of-at-least-32-bytes-xx")))
    assert bad.status_code == 401 and bad.json == {"error": "invalid token: bad signature"}
