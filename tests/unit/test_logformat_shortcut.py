"""The JSON formatter's shortcut for plain records writes what the library writes."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from pythonjsonlogger.core import BaseJsonFormatter

from server.logformat import JsonFormatter
from server.logs import FORMAT, RENAME


class LibraryPath(JsonFormatter):
    """The same formatter with the library's ``format`` (no shortcut)."""

    def format(self, record: logging.LogRecord) -> str:
        return BaseJsonFormatter.format(self, record)


def record(
    msg: Any = "stream opened", args: tuple[Any, ...] = (), extra: dict[Any, Any] | None = None, **kw: Any
) -> logging.LogRecord:
    logger = logging.getLogger("jobstream.streaming")
    return logger.makeRecord(
        logger.name, logging.INFO, "(unknown file)", 0, msg, args, kw.get("exc_info"), None, extra, kw.get("sinfo")
    )


def _raised() -> Any:
    try:
        raise ValueError("boom")
    except ValueError:
        return sys.exc_info()


CASES = {
    "the connect line": lambda: record(
        extra={"event": "stream_opened", "client_id": "c1", "ip": "127.0.0.1", "topics": ["a", "b*"], "sub": None}
    ),
    "no extras": lambda: record(),
    "arguments": lambda: record("opened %s of %d", ("c1", 3)),
    "private and odd keys": lambda: record(extra={"_hidden": 1, 7: "seven", "ünï": "ok"}),
    "renamed field as an extra": lambda: record(extra={"level": "mine"}),
    "an exception": lambda: record(exc_info=_raised()),
    "a stack": lambda: record(sinfo="Stack (most recent call last):\n  here"),
    "a dict message": lambda: record({"event": "as_message", "n": 1}),
}


@pytest.mark.parametrize("case", CASES)
def test_plain_records_format_as_the_library_does(case: str) -> None:
    fast, library = JsonFormatter(FORMAT, rename_fields=RENAME), LibraryPath(FORMAT, rename_fields=RENAME)
    rec = CASES[case]()
    assert fast.format(rec) == library.format(rec)


def test_options_the_shortcut_does_not_mirror_use_the_library() -> None:
    fast = JsonFormatter(FORMAT, rename_fields=RENAME, static_fields={"service": "jobstream"}, json_indent=2)
    library = LibraryPath(FORMAT, rename_fields=RENAME, static_fields={"service": "jobstream"}, json_indent=2)
    rec = CASES["the connect line"]()
    assert fast.format(rec) == library.format(rec)
    assert '"service": "jobstream"' in fast.format(rec)
