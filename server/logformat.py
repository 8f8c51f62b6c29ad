"""The log classes gunicorn and ``logging.config`` import by name (``server.logs``).

Kept apart from ``server.logs`` so that ``gunicorn.conf.py``, which imports
that module in the master, stays on the standard library.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gunicorn.glogging import Logger
from pythonjsonlogger import json as jsonlogger


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


class GunicornLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's logger, without the access line nobody asked for.

    With a dict log config gunicorn treats access logging as on and builds
    every request's atoms (a dozen formatted fields) before ``gunicorn.access``,
    set to WARNING here, drops the line: several percent of a publish's CPU.
    The level decides instead, so an operator who lowers it gets the lines.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)
