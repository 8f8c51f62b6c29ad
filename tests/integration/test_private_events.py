"""Private events against a real gunicorn: live, by ``Last-Event-ID`` replay,
after a gap heal, and across two workers through Redis. Every stream is
bounded in time; every wait is for an event. The rule alone is in
``tests/unit/test_private_events.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import StartServer
from tests.support.redis import RedisServer
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient
from tests.support.tokens import SECRET, mint

API_TOKEN = "operator-key-for-tests"
TOPIC = "chat/alice/1"
# Who opens a stream, how, and whether a private event on TOPIC reaches it.
# Minted at import, so they must outlive a full suite run (mint's default is 5 min).
DAY = 24 * 3600
READERS: dict[str, tuple[dict[str, str], bool]] = {
    "anonymous": ({}, False),
    "alice": ({"Authorization": f"Bearer {mint(sub='alice', subscribe=['chat/alice/*', 'news'], ttl=DAY)}"}, True),
    # reads news and chat/bob/*, not chat/alice/*
    "bob": ({"Authorization": f"Bearer {mint(sub='bob', subscribe=['chat/bob/*', 'news'], ttl=DAY)}"}, False),
    "admin": ({"Authorization": f"Bearer {mint(sub='root', subscribe=['*'], admin=True, ttl=DAY)}"}, True),
    "operator": ({"Authorization": f"Bearer {API_TOKEN}"}, True),
}


def env(**extra: str) -> dict[str, str]:
    return {"JWT_SECRET": SECRET, "STREAM_AUTH": "optional", "API_TOKEN": API_TOKEN, **extra}


def publish(server: ServerProcess, data: Any, private: bool = False, topic: str = TOPIC) -> str:
    response = server.http.post(
        "/events",
        json={"topic": topic, "data": data, "private": private},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


def open_readers(port: int, topic: str = "chat/*", **kw: Any) -> dict[str, SSEClient]:
    streams = {}
    for who, (headers, _) in READERS.items():
        # bob's filter is narrowed to chat/bob/*: ask for news too so he also
        # waits on a public event he can see.
        params = [("topic", topic), ("topic", "news")]
        streams[who] = SSEClient(port, params=params, headers=headers, timeout=15, **kw).open()
    return streams


def close(streams: dict[str, SSEClient]) -> None:
    for stream in streams.values():
        stream.close()


def datas(stream: SSEClient) -> list[Any]:
    return [e.data for e in stream.events if e.event == "message"]


@pytest.fixture
def optional(start_server: StartServer) -> ServerProcess:
    return start_server(env())


@pytest.mark.timeout(60)
def test_a_private_event_reaches_only_allowed_streams_live_and_in_replay(optional: ServerProcess) -> None:
    streams = open_readers(optional.port)
    try:
        assert all(s.status == 200 for s in streams.values())
        before = publish(optional, "public-1", topic="news")
        publish(optional, "secret", private=True)
        publish(optional, "public-2", topic="news")
        for who, stream in streams.items():
            stream.wait(lambda s: "public-2" in datas(s))
            expected = ["public-1", "secret", "public-2"] if READERS[who][1] else ["public-1", "public-2"]
            assert datas(stream) == expected, who
    finally:
        close(streams)
    # The same streams again from the first id: the replay filters alike.
    for who, (headers, allowed) in READERS.items():
        params = [("topic", "chat/*"), ("topic", "news")]
        again = SSEClient(optional.port, params=params, headers={**headers, "Last-Event-ID": before}, timeout=15)
        with again.open():
            again.wait(lambda s: "public-2" in datas(s))
            assert not again.of("reset"), who
            assert datas(again) == (["secret", "public-2"] if allowed else ["public-2"]), who


@pytest.mark.timeout(90)
def test_a_gap_heal_replays_private_events_only_to_allowed_streams(start_server: StartServer) -> None:
    # A tiny buffer and readers that do not read during a burst bigger than
    # the socket buffers: the fan-out drops, and each generator heals the gap.
    server = start_server(env(STREAM_CLIENT_BUFFER="2", STREAM_SEND_TIMEOUT="60"))
    alice_headers = READERS["alice"][0]
    alice = SSEClient(server.port, params=[("topic", TOPIC)], headers=alice_headers, timeout=30)
    anonymous = SSEClient(server.port, params=[("topic", TOPIC)], timeout=30)
    try:
        for stream in (alice, anonymous):
            stream.connect(recv_buffer=8192)
            stream.read_headers()
        pad = "x" * 32768
        for n in range(400):
            publish(server, {"n": n, "pad": pad}, private=n % 2 == 1)
        publish(server, {"n": "end", "pad": ""})
        assert server.health()["stream"]["dropped"] > 0  # the buffers did overflow
        for stream in (alice, anonymous):
            stream.wait(lambda s: any(e.json()["n"] == "end" for e in s.events if e.event == "message"), timeout=30)
            assert not stream.of("reset")
        assert [e.json()["n"] for e in alice.of("message")] == [*range(400), "end"]
        assert [e.json()["n"] for e in anonymous.of("message")] == [*range(0, 400, 2), "end"]
    finally:
        alice.close()
        anonymous.close()


def test_private_must_be_a_json_boolean_against_gunicorn(optional: ServerProcess) -> None:
    response = optional.http.post(
        "/events",
        json={"topic": TOPIC, "data": 1, "private": "yes"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "private must be true or false (a JSON boolean)"}


def test_private_with_stream_auth_off_is_a_400(start_server: StartServer) -> None:
    server = start_server({"API_TOKEN": API_TOKEN})
    response = server.http.post(
        "/events", json={"topic": TOPIC, "data": 1, "private": True}, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "private events need STREAM_AUTH=optional or required"}


@pytest.mark.timeout(90)
def test_with_redis_a_private_event_reaches_only_allowed_streams_on_every_worker(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    # A pool of 10 per worker: the 18 streams must spread over both workers.
    # Publishing never fans out locally (every worker's reader delivers), so
    # each stream takes the cross-worker path whichever worker took the POST.
    server = start_server(env(REDIS_URL=redis_server.url, WEB_CONCURRENCY="2"), args=["--worker-connections", "10"])
    kinds = ["alice", "anonymous", "bob"] * 6
    streams: list[tuple[str, SSEClient]] = []
    try:
        for who in kinds:
            headers = READERS[who][0]
            client = SSEClient(
                server.port, params=[("topic", "chat/*"), ("topic", "news")], headers=headers, timeout=20
            )
            streams.append((who, client.connect()))
        for _, client in streams:
            client.read_headers()
            assert client.status == 200
        opened = [r for r in server.log_records() if r.get("event") == "stream_opened"]
        assert len({r["pid"] for r in opened}) == 2
        publish(server, "secret", private=True)
        publish(server, "public", topic="news")
        for who, client in streams:
            client.wait(lambda s: "public" in datas(s))
            assert datas(client) == (["secret", "public"] if READERS[who][1] else ["public"]), who
        # And the replay reads the Redis stream with the same rule.
        first = streams[0][1].events[0].id
        assert first is not None
        for who in ("alice", "anonymous"):
            headers = {**READERS[who][0], "Last-Event-ID": first}
            params = [("topic", "chat/*"), ("topic", "news")]
            with SSEClient(server.port, params=params, headers=headers, timeout=20).open() as again:
                again.wait(lambda s: "public" in datas(s))
                assert datas(again) == ["public"], who
        headers = {**READERS["alice"][0], "Last-Event-ID": "0-0"}
        with SSEClient(server.port, params=[("topic", "chat/*"), ("topic", "news")], headers=headers).open() as again:
            again.wait(lambda s: "public" in datas(s))
            assert datas(again) == ["secret", "public"]
    finally:
        for _, client in streams:
            client.close()
