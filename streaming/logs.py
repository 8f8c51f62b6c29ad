"""JSON logs: one object per line on stderr, for the app and for gunicorn.

``gunicorn_logconfig`` is used by ``gunicorn.conf.py`` in the master, so it
only returns a dict; the formatter class is named by string and imported by
``logging.config`` when gunicorn applies it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pythonjsonlogger import json as jsonlogger

FORMATTER = "streaming.logs.JsonFormatter"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
RENAME = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


class JsonFormatter(jsonlogger.JsonFormatter):
    """python-json-logger's formatter, cheaper per record (same output).

    A stream's connect logs a line, and in a reconnect storm that line was a
    fifth of the connect's CPU: the library builds a new JSON encoder for
    every record and formats the time from scratch. Here one encoder is
    reused and the date and time to the second are formatted once a second.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = jsonlogger.JsonEncoder(ensure_ascii=self.json_ensure_ascii)
        self._second: tuple[int, str] = (-1, "")

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        if self.defaults or self.static_fields or self.timestamp or self.rename_fields_keep_missing:
            super().add_fields(log_data, record, message_dict)
            return
        # The library's loop, with fewer calls per field: the format's fields,
        # a dict logged as the message, then the record's extras.
        rename, fields, skip = self.rename_fields, record.__dict__, self._skip_fields
        for name in self._required_fields:
            log_data[rename.get(name, name)] = fields.get(name)
        for name, value in message_dict.items():
            log_data[rename.get(name, name)] = value
        for name, value in fields.items():
            if name not in skip and not (isinstance(name, str) and name.startswith("_")):
                log_data[rename.get(name, name)] = value

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        if self.json_default is not None or self.json_indent is not None:
            return super().jsonify_log_record(log_data)
        return self._encoder.encode(log_data)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = (second, text)  # one assignment: safe across threads
        return f"{text},{int(record.msecs):03d}"


def gunicorn_logconfig(level: str) -> dict[str, Any]:
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": FORMATTER, "fmt": FORMAT, "rename_fields": RENAME}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": lvl, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": lvl, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            "jobstream": {"level": lvl, "handlers": [], "propagate": True},
        },
    }


def configure(level: str) -> None:
    """Outside gunicorn (flask run, scripts): JSON on stderr unless logging is set up.

    Also stops every log record from asking for its thread: under gevent each
    greenlet that logs would get a dummy Thread object built for it, which was
    a quarter of the cost of logging a stream's connect.
    """
    logging.logThreads = False
    logging.logMultiprocessing = False
    # No caller lookup (file, line, function) per record: no field of ours
    # uses it, and it walks the stack. Setting this is logging's documented
    # way to skip it (see the comment on _srcfile in logging/__init__.py).
    logging._srcfile = None  # type: ignore[attr-defined]
    logger = logging.getLogger("jobstream")
    logger.setLevel(level.upper())
    if logging.getLogger().handlers or logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(FORMAT, rename_fields=RENAME))
    logger.addHandler(handler)
