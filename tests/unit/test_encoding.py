"""SSE framing: the encoder alone.

The same table read back from a real server is in ``tests/integration/test_encoding_wire.py``.
"""

from __future__ import annotations

import pytest

from streaming.core.events import Event, data_text, encode, encode_comment
from tests.support.framing import FRAMING


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
