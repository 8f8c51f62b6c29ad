"""The JSON messages of ``GET /ws`` without a server: what a client may send,
what each mistake is called, and how events are written."""

from __future__ import annotations

import json

import pytest

from streaming.core.events import Event
from streaming.core.topics import TopicFilter
from streaming.transport import ws_messages
from streaming.transport.ws_messages import Command, parse


def test_the_four_commands() -> None:
    assert parse('{"type": "subscribe", "topics": ["jobs/*"], "last_event_id": "1-0"}') == Command(
        "subscribe", ("jobs/*",), "1-0"
    )
    assert parse('{"type": "subscribe"}') == Command("subscribe")  # no topics: nothing yet
    assert parse('{"type": "unsubscribe", "topics": ["a"]}') == Command("unsubscribe", ("a",))
    assert parse('{"type": "visibility", "hidden": true}') == Command("visibility", hidden=True)
    assert parse('{"type": "ping"}') == Command("ping")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{", "message is not JSON"),
        ("[1]", "message must be a JSON object"),
        ('{"type": "dance"}', "type must be one of subscribe, unsubscribe, visibility, ping; got 'dance'"),
        ('{"type": "ping", "x": 1}', "unknown field for ping: x"),
        ('{"type": "subscribe", "topics": "a"}', "topics must be a list of topic patterns (strings)"),
        ('{"type": "subscribe", "topics": [1]}', "topics must be a list of topic patterns (strings)"),
        ('{"type": "subscribe", "last_event_id": 5}', "last_event_id must be a string"),
        ('{"type": "visibility", "hidden": "yes"}', "hidden must be true or false"),
        (b"\x00", "messages are JSON text frames, not binary"),
    ],
)
def test_each_mistake_is_named(text: str | bytes, error: str) -> None:
    with pytest.raises(ValueError, match="^" + error.replace("(", r"\(").replace(")", r"\)") + "$"):
        parse(text)


def test_events_carry_their_json_value_and_text_stays_text() -> None:
    as_json = json.loads(ws_messages.event(Event.create("5-1", "jobs/a", "job", '{"id":"a"}')))
    assert as_json == {"type": "event", "id": "5-1", "event": "job", "topic": "jobs/a", "data": {"id": "a"}}
    assert json.loads(ws_messages.event(Event.create("5-2", "t", "log", "plain words")))["data"] == "plain words"
    assert json.loads(ws_messages.control("snapshot", {"jobs": []}, "5-2")) == {
        "type": "snapshot", "id": "5-2", "data": {"jobs": []},
    }  # fmt: skip
    assert json.loads(ws_messages.error("nope")) == {"type": "error", "error": "nope"}


def test_a_socket_before_its_first_subscribe_matches_nothing() -> None:
    nothing = TopicFilter.nothing()
    assert not nothing.matches("jobs/1") and not nothing.matches("") and not nothing.could_match_prefix("jobs/")
    assert not nothing.everything and nothing.patterns == ()
