"""SSE framing: the encoder, and the bytes a real server sends."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import connect_sse

from streaming.core.events import Event, data_text, encode, encode_comment
from tests.support.server import ServerProcess
from tests.support.sse import SSEClient

# (name, data as published, exact data: lines on the wire, what a browser dispatches)
FRAMING = [
    ("plain", "hello", b"data: hello\n", "hello"),
    ("multi-line LF", "a\nb\nc", b"data: a\ndata: b\ndata: c\n", "a\nb\nc"),
    ("CR only", "a\rb", b"data: a\ndata: b\n", "a\nb"),
    ("CRLF", "a\r\nb", b"data: a\ndata: b\n", "a\nb"),
    ("mixed breaks", "a\r\n\rb\nc", b"data: a\ndata: \ndata: b\ndata: c\n", "a\n\nb\nc"),
    ("unicode", "héllo ✓ 日本", "data: héllo ✓ 日本\n".encode(), "héllo ✓ 日本"),
    ("empty", "", b"data: \n", ""),
    ("trailing newline", "x\n", b"data: x\ndata: \n", "x\n"),
    (
        "injection",
        "\n\nevent: evil\ndata: x",
        b"data: \ndata: \ndata: event: evil\ndata: data: x\n",
        "\n\nevent: evil\ndata: x",
    ),
    ("leading space kept", " padded", b"data:  padded\n", " padded"),
    ("colon", "a: b", b"data: a: b\n", "a: b"),
]


@pytest.mark.parametrize(("name", "data", "wire", "dispatched"), FRAMING, ids=[f[0] for f in FRAMING])
def test_encoder_splits_data_on_every_line_break(name: str, data: str, wire: bytes, dispatched: str) -> None:
    encoded = encode(id="1-0", event="job", data=data)
    assert encoded == b"id: 1-0\nevent: job\n" + wire + b"\n"
    # One event: exactly one blank line, at the end.
    assert encoded.count(b"\n\n") == 1 and encoded.endswith(b"\n\n")


def test_encoder_refuses_line_breaks_in_single_line_fields() -> None:
    with pytest.raises(ValueError):
        encode(event="a\nb", data="x")
    with pytest.raises(ValueError):
        encode(id="1\r", data="x")


def test_comments_and_json_data() -> None:
    assert encode_comment("keepalive") == b": keepalive\n"
    assert encode_comment("") == b":\n"
    assert data_text({"b": [1, 2], "a": "é"}) == '{"b":[1,2],"a":"é"}'
    assert data_text("text stays text") == "text stays text"
    assert data_text(None) == "null"


def test_event_is_encoded_once_and_keeps_its_key() -> None:
    event = Event.create("1700000000000-7", "jobs/1", "job", "x")
    assert event.key == (1700000000000, 7)
    assert event.wire == b"id: 1700000000000-7\nevent: job\ndata: x\n\n"


@pytest.mark.timeout(30)
def test_framing_table_over_a_real_server(shared_server: ServerProcess) -> None:
    topic = "framing"
    with SSEClient(shared_server.port, params=[("topic", topic)]) as raw:
        raw.open()
        raw.wait(lambda c: c.comments)  # subscribed
        ids = [shared_server.publish(topic, data, event="frame") for _, data, _, _ in FRAMING]
        events = raw.wait_events(len(FRAMING), event="frame")
    for (name, _, wire, dispatched), event, event_id in zip(FRAMING, events, ids, strict=True):
        assert event.data == dispatched, name
        assert event.id == event_id
        assert f"id: {event_id}\nevent: frame\n".encode() + wire + b"\n" in bytes(raw.raw), name
    assert [e.event for e in raw.events] == ["frame"] * len(FRAMING)  # the injection made no event


@pytest.mark.timeout(30)
def test_framing_read_back_by_httpx_sse(shared_server: ServerProcess) -> None:
    topic = "framing-httpx"
    with (
        httpx.Client(timeout=10) as http,
        connect_sse(http, "GET", shared_server.url(f"/stream?topic={topic}")) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for _, data, _, _ in FRAMING:
            shared_server.publish(topic, data, event="frame")
        received = []
        for sse in source.iter_sse():
            if sse.event != "frame":
                continue  # httpx-sse also reports the opening retry: as an empty event
            received.append(sse)
            if len(received) == len(FRAMING):
                break
    assert [e.data for e in received] == [f[3] for f in FRAMING]
    assert {e.event for e in received} == {"frame"}
