"""The log classes gunicorn and ``logging.config`` import by name (``server.logs``).

Kept apart from ``server.logs`` so that ``gunicorn.conf.py``, which imports
that module in the master, stays on the standard library.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Any
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger
from pythonjsonlogger import json as jsonlogger
from pythonjsonlogger.core import BaseJsonFormatter

# How many attributes LogRecord.__init__ sets: a plain record's extras (and
# what formatting adds) come after them in its __dict__, in insertion order.
_RECORD_ATTRS = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)


class JsonFormatter(jsonlogger.JsonFormatter):
    """python-json-logger's formatter, cheaper per record (same output).

    A stream's connect logs a line, and in a reconnect storm that line was a
    fifth of the connect's CPU: the library builds a new JSON encoder for
    every record and formats the time from scratch. Here one encoder is
    reused and the date and time to the second are formatted once a second.
    A plain record (a string message, no exception or stack, a plain
    ``LogRecord``) is formatted in one method that looks only at the
    record's extras, not at each of its twenty standard attributes; anything
    else, or a formatter configured with options this shortcut does not
    mirror, goes through the library unchanged.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = jsonlogger.JsonEncoder(ensure_ascii=self.json_ensure_ascii)
        self._second: tuple[int, str] = (-1, "")
        self._shortcut = not (
            self.defaults
            or self.static_fields
            or self.timestamp
            or self.rename_fields_keep_missing
            or self.json_default is not None
            or self.json_indent is not None
            or type(self).process_log_record is not BaseJsonFormatter.process_log_record
        )
        self._wants_time = "asctime" in self._required_fields

    def format(self, record: logging.LogRecord) -> str:
        if (
            not self._shortcut
            or type(record) is not logging.LogRecord
            or record.exc_info
            or record.exc_text
            or record.stack_info
            or isinstance(record.msg, dict)
        ):
            return super().format(record)
        record.message = record.getMessage()
        if self._wants_time:
            record.asctime = self.formatTime(record, self.datefmt)
        log_data: dict[str, Any] = {}
        rename, fields, skip = self.rename_fields, record.__dict__, self._skip_fields
        for name in self._required_fields:
            log_data[rename.get(name, name)] = fields.get(name)
        for name in islice(fields, _RECORD_ATTRS, None):
            if name not in skip and not (isinstance(name, str) and name.startswith("_")):
                log_data[rename.get(name, name)] = fields[name]
        return self.prefix + self._encoder.encode(log_data)

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


# Query parameters whose values never reach a log: server.tokens.QUERY_PARAM
# (named here too: this module must not import PyJWT, and a test compares them).
SECRET_PARAMS = frozenset({"access_token"})
# Request headers that carry credentials (API_TOKEN, JWTs): never logged.
SECRET_HEADERS = ("{authorization}i", "{cookie}i")
REDACTED = "[redacted]"


def redact_query(query: str) -> str:
    """``query`` with the value of every secret parameter replaced.

    Names are compared percent-decoded (``access%5Ftoken`` is the same
    parameter to the parser that reads tokens); everything else is kept.
    """
    if not query or ("token" not in query and "%" not in query):
        return query  # the common case, without splitting
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if eq and unquote_plus(name) in SECRET_PARAMS:
            parts[i] = f"{name}={REDACTED}"
    return "&".join(parts)


def redact_uri(uri: str) -> str:
    path, sep, query = uri.partition("?")
    return f"{path}{sep}{redact_query(query)}" if sep else uri


class GunicornLogger(Logger):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's logger, without the access line nobody asked for, and
    without the credentials a request carries.

    With a dict log config gunicorn treats access logging as on and builds
    every request's atoms (a dozen formatted fields) before ``gunicorn.access``,
    set to WARNING here, drops the line: several percent of a publish's CPU.
    The level decides instead, so an operator who lowers it gets the lines.
    Those lines never hold a token: ``?access_token=`` is redacted in the
    request line, the query and the environ atoms, and the ``Authorization``
    and ``Cookie`` headers in any ``%({name}i)s`` an access log format uses.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        raw_uri = environ.get("RAW_URI", "")
        if "?" in raw_uri:
            atoms["r"] = f"{environ['REQUEST_METHOD']} {redact_uri(raw_uri)} {environ['SERVER_PROTOCOL']}"
        atoms["q"] = redact_query(str(atoms.get("q") or ""))
        for key in ("{query_string}e", "{raw_uri}e", "{request_uri}e"):
            if key in atoms:
                atoms[key] = redact_query(str(atoms[key])) if key == "{query_string}e" else redact_uri(str(atoms[key]))
        for key in SECRET_HEADERS:
            if key in atoms:
                atoms[key] = REDACTED
        return atoms
