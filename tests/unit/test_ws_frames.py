"""ws_messages.event_frame: one frame per event, the bytes wsproto would send."""

from __future__ import annotations

from wsproto.frame_protocol import FrameProtocol

from streaming.core.events import Event
from streaming.transport import ws_messages


def _wsproto(text: str) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text, fin=True))


def test_frames_match_wsproto_at_every_length_boundary() -> None:
    for n in (0, 125, 126, 65535, 65536):
        text = "é" * (n // 2) + "x" * (n % 2)
        assert ws_messages.text_frame(text) == _wsproto(text)


def test_an_event_is_framed_once_and_the_frame_is_its_message() -> None:
    ev = Event.create("1-1", "t", "tick", '{"seq":1}')
    first = ws_messages.event_frame(ev)
    assert ws_messages.event_frame(ev) is first
    assert first == _wsproto(ws_messages.event(ev))


def test_the_cache_is_bounded() -> None:
    for i in range(ws_messages.FRAME_CACHE_EVENTS * 2):
        ws_messages.event_frame(Event.create(f"2-{i}", "t", "tick", "{}"))
    assert len(ws_messages._frames) <= ws_messages.FRAME_CACHE_EVENTS
