"""gunicorn worker hooks: start background work, and end streams on signals.

gunicorn's gevent worker handles SIGTERM by setting ``worker.alive = False``
and then waits up to ``graceful_timeout`` for requests to finish; it calls no
hook, and an SSE stream never finishes by itself. So ``post_worker_init``
replaces the SIGTERM handler: health flips to draining and writes are
refused (503) at once, the streams get their ``shutdown`` event (spread over
``STREAM_DRAIN_SECONDS``), and only then is ``alive`` cleared so gunicorn
closes the listener and exits. gunicorn notices within a second, and serves
what arrives meanwhile: by then the broker is closed, which is why writes
are refused from the start of the drain rather than attempted.
SIGINT and SIGQUIT go through gunicorn's ``handle_quit``, which calls the
``worker_int`` hook.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from typing import Any

from streaming.ops.service import StreamingService
from streaming.scaleout.instance import DeliveryCursors, InstanceAdmission, InstanceTable

log = logging.getLogger("jobstream.lifecycle")

# How long streams get to write their farewell before the worker stops anyway.
FLUSH_SECONDS = 1.5
# Young-generation size for the cyclic garbage collector (CPython's default: 700).
GC_GEN0_THRESHOLD = 10_000


def _service_of(worker: Any) -> StreamingService | None:
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", None) or {}
    svc = extensions.get("jobstream")
    return svc if isinstance(svc, StreamingService) else None


def post_worker_init(worker: Any, table: InstanceTable | None = None) -> None:
    """Start the worker's service; with ``table`` (several workers) the stream
    limits and /health totals are the instance's (``streaming.scaleout.instance``)."""
    svc = _service_of(worker)
    if svc is None:
        return
    if table is not None:
        row = table.claim(os.getpid())
        settings = svc.settings
        admission = InstanceAdmission(table, row, settings.max_connections, settings.max_connections_per_ip)
        svc.share_limits(admission, DeliveryCursors(table, row))
    svc.start()
    tune_gc()

    def drain() -> None:
        svc.shutdown()
        svc.wait_closed(FLUSH_SECONDS)
        svc.close()
        worker.alive = False

    def on_term(signum: int, frame: Any) -> None:
        if svc.shutting_down:
            return
        svc.mark_draining()
        import gevent

        # Out of the signal handler: it may have interrupted any greenlet.
        gevent.spawn(drain)

    signal.signal(signal.SIGTERM, on_term)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the connect path.

    Each open stream holds a few dozen long-lived objects, so at 10,000
    streams the heap is ten times what start-up left, and the collector's
    passes over it (young ones every 700 allocations, full ones as the heap
    grows) took a fifth of a reconnect storm's CPU. Everything loaded so far
    (Flask, gunicorn, the app) lives as long as the worker: ``gc.freeze``
    takes it out of every pass, and a larger young generation makes passes
    rarer. Closed streams do not wait for the collector: they hold no
    reference cycles (``Client.stop_watching``).
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def worker_int(worker: Any) -> None:
    svc = _service_of(worker)
    if svc is None or svc.shutting_down:
        return
    svc.shutdown(drain_seconds=0)
    svc.wait_closed(FLUSH_SECONDS)
    svc.close()
