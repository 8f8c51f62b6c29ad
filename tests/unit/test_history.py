"""History window and ids: the rules a Last-Event-ID replay relies on."""

from __future__ import annotations

from pathlib import Path

import pytest

from streaming.core.events import Event
from streaming.core.history import EXPIRED, UNKNOWN, History, ReplayGap, SqliteHistory
from streaming.core.ids import IdGenerator, format_id, parse_id
from streaming.core.topics import TopicFilter

ALL = TopicFilter()


def ev(ms: int, seq: int = 0, topic: str = "t") -> Event:
    return Event.create(format_id((ms, seq)), topic, "message", f"{ms}-{seq}")


def test_ids_are_monotonic_even_when_the_clock_goes_back() -> None:
    times = iter([100, 100, 99, 101, 50])
    gen = IdGenerator(last=(100, 5), clock_ms=lambda: next(times))
    assert [gen.next() for _ in range(5)] == [(100, 6), (100, 7), (100, 8), (101, 0), (101, 1)]


@pytest.mark.parametrize("bad", ["", "abc", "1-", "-1", "1-2-3", "\uff11-2", "1 -2", None])
def test_malformed_ids(bad: str | None) -> None:
    assert parse_id(bad) is None


def test_replay_returns_exactly_what_follows() -> None:
    history = History(10, [ev(i) for i in range(1, 6)])
    assert [e.key for e in history.after((3, 0), ALL)] == [(4, 0), (5, 0)]
    assert history.after((5, 0), ALL) == []


def test_replay_filters_topics() -> None:
    history = History(10, [ev(1, topic="a"), ev(2, topic="b"), ev(3, topic="a/x")])
    assert [e.key for e in history.after((1, 0), TopicFilter(["a*"]))] == [(3, 0)]


def test_expired_and_unknown_ids_are_gaps() -> None:
    history = History(4)
    for i in range(1, 21):
        history.append(ev(i))
    assert [e.key[0] for e in history.after((16, 0), ALL)] == [17, 18, 19, 20]
    with pytest.raises(ReplayGap) as info:
        history.after((15, 0), ALL)  # the floor: trimmed, but the last one trimmed
    with pytest.raises(ReplayGap) as info:
        history.after((3, 0), ALL)
    assert info.value.reason == EXPIRED
    with pytest.raises(ReplayGap) as info:
        history.after((99, 0), ALL)
    assert info.value.reason == UNKNOWN
    with pytest.raises(ReplayGap):
        history.after((17, 3), ALL)  # never issued


def test_floor_id_resumes_with_everything_in_the_window() -> None:
    history = History(4)
    for i in range(1, 9):
        history.append(ev(i))
    # Window is 5..8 (in memory up to size + size/4 are kept); the floor is 4.
    assert [e.key[0] for e in history.after((4, 0), ALL)] == [5, 6, 7, 8]


def test_sqlite_history_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    store = SqliteHistory(path, 5)
    for i in range(1, 13):
        store.append(ev(i))
    store.close()
    again = SqliteHistory(path, 5)
    history = again.load()
    assert [e.key[0] for e in history.after((9, 0), ALL)] == [10, 11, 12]
    assert again.last_issued() == (12, 0)
    with pytest.raises(ReplayGap):
        history.after((2, 0), ALL)
