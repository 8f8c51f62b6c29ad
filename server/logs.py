"""JSON logs: one object per line on stderr, for the app and for gunicorn.

``gunicorn_logconfig`` is used by ``gunicorn.conf.py`` in the master, so it
only returns a dict; the formatter class is named by string and imported by
``logging.config`` when gunicorn applies it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

# Named by string: imported by logging.config in the worker, or by gunicorn.
FORMATTER = "server.logformat.JsonFormatter"
LOGGER_CLASS = "server.logformat.GunicornLogger"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
RENAME = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


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
    from server.logformat import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(FORMAT, rename_fields=RENAME))
    logger.addHandler(handler)
