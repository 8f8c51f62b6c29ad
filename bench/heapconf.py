"""A gunicorn config for ``python -m bench.heap``: the app's own config, plus
tracemalloc in the worker and a heap dump on SIGUSR2.

Loaded with ``gunicorn -c <this file>`` from the app directory, which may be
another checkout: so this file imports nothing from the repository, only the
standard library and (in the worker, after patching) gevent. It runs the
app directory's ``gunicorn.conf.py`` and wraps its ``post_worker_init``;
production code has no hook for it.

``JOBSTREAM_HEAP_DIR``: where each dump goes (``snap-<k>.pickle``, the
tracemalloc snapshot, and ``snap-<k>.json``, the figures beside it, written
last: its presence means the dump is complete).
``JOBSTREAM_HEAP_FRAMES``: traceback depth (default 30).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import runpy
import signal
import sys
import time
import tracemalloc
from collections import Counter
from typing import Any

_app_conf = runpy.run_path(os.path.join(os.getcwd(), "gunicorn.conf.py"))
globals().update({k: v for k, v in _app_conf.items() if not k.startswith("__")})
_app_post_worker_init = _app_conf.get("post_worker_init")


def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


_MALLINFO = ["arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"]


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO]


def _mallinfo() -> dict[str, int]:
    """glibc's view: bytes malloc has in use and holds free (not pymalloc's arenas)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {name: int(getattr(info, name)) for name in _MALLINFO}


def _dump(directory: str, seq: list[int]) -> None:
    seq[0] += 1
    k = seq[0]
    gc.collect()
    snap = tracemalloc.take_snapshot()
    path = os.path.join(directory, f"snap-{k}")
    snap.dump(path + ".pickle")
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    current, peak = tracemalloc.get_traced_memory()
    figures: dict[str, Any] = {
        "k": k,
        "time": time.time(),
        "rss": _rss(),
        "traced": current,
        "traced_peak": peak,
        "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
        "mallinfo": _mallinfo(),
        "types": dict(types.most_common(400)),
    }
    with open(path + ".tmp", "w") as fh:
        json.dump(figures, fh)
    os.replace(path + ".tmp", path + ".json")


def post_worker_init(worker: Any) -> None:
    if _app_post_worker_init is not None:
        _app_post_worker_init(worker)
    directory = os.environ["JOBSTREAM_HEAP_DIR"]
    tracemalloc.start(int(os.environ.get("JOBSTREAM_HEAP_FRAMES", "30")))
    import gevent

    seq = [0]
    # gevent runs the handler in a new greenlet, never inside a greenlet it interrupted.
    gevent.signal_handler(signal.SIGUSR2, _dump, directory, seq)
    sys.stderr.write(f"heapconf: tracemalloc on in worker {os.getpid()}\n")
