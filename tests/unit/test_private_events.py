"""Private events without a server: who may read one (``Client.may_read``),
the fan-out, replay and SQLite history that apply it, and ``POST /events``'s
``private`` field. Real streams are in ``tests/integration/test_private_events.py``."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import streaming
from server.tokens import OPERATOR, Grant
from streaming.core.broker import MemoryBroker
from streaming.core.client import Client
from streaming.core.events import Delivery, Event
from streaming.core.history import History, SqliteHistory
from streaming.core.ids import format_id
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.core.writer import StreamWriter
from streaming.ops.service import PRIVATE_NEEDS_AUTH
from tests.support.apps import app_in
from tests.support.tokens import SECRET

ALL = TopicFilter()
API_TOKEN = "operator-key"
OPERATOR_HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}
ALICE = Grant(sub="alice", exp=2e9, subscribe=("chat/alice/*",))
BOB = Grant(sub="bob", exp=2e9, subscribe=("chat/bob/*",))
ADMIN = Grant(sub="root", exp=2e9, subscribe=("news",), admin=True)
READERS: dict[str, Grant | None] = {"anonymous": None, "alice": ALICE, "bob": BOB, "admin": ADMIN, "operator": OPERATOR}


def ev(ms: int, topic: str = "chat/alice/1", private: bool = False) -> Event:
    return Event.create(format_id((ms, 0)), topic, "message", f"{ms}", Delivery(private=private))


def reader(grant: Grant | None, topics: tuple[str, ...] = ()) -> Client:
    return Client(StreamWriter(queue.Queue(maxsize=50)), "10.0.0.1", "t", TopicFilter(topics), grant=grant)


# (reader, public event readable, private event on chat/alice/1 readable)
RULES = [
    ("anonymous", True, False),
    ("alice", True, True),  # a subscribe pattern matches the topic
    ("bob", True, False),  # a token, but not for this topic
    ("admin", True, True),  # admin reads private events whatever its patterns
    ("operator", True, True),  # API_TOKEN
]


@pytest.mark.parametrize(("who", "public", "private"), RULES)
def test_who_may_read_a_private_event(who: str, public: bool, private: bool) -> None:
    client = reader(READERS[who])
    assert client.may_read(ev(1)) is public
    assert client.may_read(ev(2, private=True)) is private


def test_a_grant_without_subscribe_patterns_reads_no_private_event() -> None:
    writer_only = reader(Grant(sub="w", exp=2e9, publish=("*",)))
    assert not writer_only.may_read(ev(1, private=True))
    assert writer_only.may_read(ev(2))


def test_fanout_gives_a_private_event_only_to_readers_allowed_it() -> None:
    registry = Registry(max_connections=10, send_timeout_seconds=5, keepalive_seconds=30)
    clients = {who: reader(grant) for who, grant in READERS.items()}
    for client in clients.values():
        assert registry.admit(client) is None
    assert registry.fanout(ev(1, private=True)) == 3
    assert registry.fanout(ev(2)) == 5
    got = {who: [c.writer.queue.get_nowait().data for _ in range(c.writer.queue.qsize())] for who, c in clients.items()}
    assert got == {"anonymous": ["2"], "alice": ["1", "2"], "bob": ["2"], "admin": ["1", "2"], "operator": ["1", "2"]}


def test_fanout_of_a_private_event_still_honours_the_topic_filter() -> None:
    registry = Registry(max_connections=10, send_timeout_seconds=5, keepalive_seconds=30)
    elsewhere = reader(OPERATOR, topics=("news",))
    assert registry.admit(elsewhere) is None
    assert registry.fanout(ev(1, private=True)) == 0


def test_history_after_filters_private_events_for_the_reader() -> None:
    history = History(10, [ev(1), ev(2, private=True), ev(3), ev(4, topic="chat/bob/1", private=True)])
    assert [e.data for e in history.after((1, 0), ALL)] == ["3"]  # no reader: public only
    assert [e.data for e in history.after((1, 0), ALL, reader(ALICE).may_read)] == ["2", "3"]
    assert [e.data for e in history.after((1, 0), ALL, reader(BOB).may_read)] == ["3", "4"]
    assert [e.data for e in history.after((1, 0), ALL, reader(ADMIN).may_read)] == ["2", "3", "4"]
    assert [e.data for e in history.after((0, 0), TopicFilter(["chat/bob/*"]), reader(ALICE).may_read)] == []


def test_an_id_the_reader_never_saw_still_resumes() -> None:
    # A snapshot's id may be a private event's: resumability is decided on
    # ids before filtering, so it replays (here: nothing), never a reset.
    history = History(10, [ev(1), ev(2, private=True)])
    assert history.after((2, 0), ALL) == []
    assert [e.data for e in history.after((1, 0), ALL, reader(None).may_read)] == []


def test_sqlite_history_keeps_the_private_flag_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = SqliteHistory(path, 10)
    store.append(ev(1))
    store.append(ev(2, private=True))
    store.close()
    again = SqliteHistory(path, 10)
    try:
        assert [(e.data, e.private) for e in again.load().after((0, 0), ALL, reader(ALICE).may_read)] == [
            ("1", False),
            ("2", True),
        ]
    finally:
        again.close()


def test_a_history_file_from_before_private_events_still_loads(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    # The schema as it was before the ``private`` column.
    old.execute(
        "CREATE TABLE stream_events (ms INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " topic TEXT NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (ms, seq)) WITHOUT ROWID"
    )
    old.execute("CREATE TABLE stream_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute("INSERT INTO stream_events VALUES (5, 0, 'news', 'message', 'old')")
    old.commit()
    old.close()
    store = SqliteHistory(path, 10)
    try:
        history = store.load()
        assert [(e.data, e.private) for e in history.after((0, 0), ALL)] == [("old", False)]
        store.append(ev(6, private=True))
        assert [e.private for e in store.load().after((0, 0), ALL, reader(ADMIN).may_read)] == [False, True]
    finally:
        store.close()
    SqliteHistory(path, 10).close()  # the column exists now: opening again is a no-op


def test_memory_broker_replays_private_events_only_to_allowed_readers() -> None:
    registry = Registry(max_connections=10, send_timeout_seconds=5, keepalive_seconds=30)
    broker = MemoryBroker(registry, 10)
    first = broker.publish("chat/alice/1", "message", "public")
    broker.publish("chat/alice/1", "message", "secret", Delivery(private=True))
    assert [e.data for e in broker.replay(first.key, ALL, reader(ALICE).may_read)] == ["secret"]
    assert broker.replay(first.key, ALL, reader(None).may_read) == []


# -- POST /events and broadcast ---------------------------------------------------


def _app(tmp_path: Path, **settings: Any) -> Iterator[Flask]:
    yield from app_in(tmp_path, **settings)


@pytest.fixture
def optional(tmp_path: Path) -> Iterator[Flask]:
    yield from _app(tmp_path, jwt_secret=SECRET, stream_auth="optional", api_token=API_TOKEN)


@pytest.fixture
def off(tmp_path: Path) -> Iterator[Flask]:
    yield from _app(tmp_path)


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [], {}])
def test_private_must_be_a_json_boolean(optional: Flask, value: object) -> None:
    response = optional.test_client().post(
        "/events", json={"topic": "t", "data": 1, "private": value}, headers=OPERATOR_HEADERS
    )
    assert response.status_code == 400
    assert response.json == {"error": "private must be true or false (a JSON boolean)"}


@pytest.mark.parametrize("value", [True, False])
def test_private_true_or_false_is_accepted_with_stream_tokens(optional: Flask, value: bool) -> None:
    response = optional.test_client().post(
        "/events", json={"topic": "t", "data": 1, "private": value}, headers=OPERATOR_HEADERS
    )
    assert response.status_code == 202, response.json
    svc = streaming.service_of(optional)
    (published,) = svc.broker.history.after((0, 0), ALL, reader(OPERATOR).may_read)  # type: ignore[attr-defined]
    assert published.private is value


def test_private_with_stream_auth_off_is_a_400_and_not_published(off: Flask) -> None:
    response = off.test_client().post("/events", json={"topic": "t", "data": 1, "private": True})
    assert response.status_code == 400 and response.json == {"error": PRIVATE_NEEDS_AUTH}
    assert streaming.service_of(off).broker.last_key is None
    ok = off.test_client().post("/events", json={"topic": "t", "data": 1, "private": False})
    assert ok.status_code == 202


def test_broadcast_private_reaches_only_allowed_streams(optional: Flask) -> None:
    svc = streaming.service_of(optional)
    alice, anonymous = reader(ALICE), reader(None)
    for client in (alice, anonymous):
        assert svc.registry.admit(client) is None
    streaming.broadcast("chat/alice/1", "hi", app=optional, private=True)
    assert alice.writer.queue.get_nowait().private is True
    assert anonymous.writer.queue.empty()


def test_broadcast_private_refuses_non_booleans_and_stream_auth_off(off: Flask) -> None:
    with pytest.raises(ValueError, match="private must be true or false"):
        streaming.broadcast("t", "x", app=off, private="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="STREAM_AUTH=optional or required"):
        streaming.broadcast("t", "x", app=off, private=True)


def test_the_operator_stream_is_unnarrowed_and_listed_without_a_sub() -> None:
    from streaming.transport.connect import readable

    topics = TopicFilter(["news", "chat/*"])
    assert readable(OPERATOR, topics) is topics
    assert reader(OPERATOR).info(0.0)["sub"] is None
