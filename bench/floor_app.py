"""gunicorn's own floor: the least a stream can cost on ``gunicorn -k gevent``.

Served by ``bench.servers.floor`` with the worker class, parser and
garbage-collector settings Jobstream runs with, it answers ``/health`` and
holds every other GET open as a text/event-stream with one comment, head and
comment in two writes. What Jobstream spends per connect above this is its own.
"""

import gc
from collections.abc import Callable, Iterator
from typing import Any

import gevent.event

HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
_forever: gevent.event.Event | None = None  # one Event every stream waits on; made after gevent patched


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    global _forever
    if environ["PATH_INFO"] == "/health":
        start_response("200 OK", [("Content-Type", "application/json")])
        return iter([b"{}"])
    if _forever is None:
        _forever = gevent.event.Event()
        # As streaming.ops.lifecycle.tune_gc does for Jobstream's worker.
        gc.freeze()
        gc.set_threshold(10_000, *gc.get_threshold()[1:])
    start_response("200 OK", HEADERS)
    return _stream(_forever)


def _stream(wait: gevent.event.Event) -> Iterator[bytes]:
    yield b": connected\n\n"
    wait.wait()
