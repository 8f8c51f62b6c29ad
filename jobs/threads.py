"""Real OS threads for handlers, under gevent or not.

Handlers may block or burn CPU, so they never run on the gevent loop. Under
the gunicorn gevent worker (``threading`` patched) they run in a
``gevent.threadpool.ThreadPool``: real threads, started from and reported to
the hub. A pool of our own rather than ``get_hub().threadpool``, so busy
handlers cannot starve gevent's own uses of that pool (DNS resolution).

Real threads still share the GIL. A thread waiting for the GIL asks the
holder to drop it only after ``sys.getswitchinterval()`` (5 ms by default),
and the gevent loop waits like that after every socket call; with four
pure-Python handlers spinning, one request then took up to a second. So in
the server the interval is lowered to ``GIL_SWITCH_SECONDS``: measured with
four CPU-bound handlers, keep-alives kept their 0.25 s beat (each within 0.2 s)
and events were delivered in under 50 ms instead of up to 1 s. CPU-heavy
handlers that need the full core belong in ``python -m jobs.worker``.

Unpatched (``python -m jobs.worker``, unit tests) each job gets a daemon
``threading.Thread``. Not ``ThreadPoolExecutor``: its threads are joined at
interpreter exit, so one handler that ignores its cancel would stop the
process from exiting. The runner already bounds how many run at once.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

Task = Callable[[], None]

GIL_SWITCH_SECONDS = 0.0005


def gevent_patched() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("threading"))


def os_thread_starter(size: int) -> Callable[[Task], None]:
    """A function that runs a task in a real OS thread, and returns at once."""
    if gevent_patched():
        from gevent.threadpool import ThreadPool

        pool = ThreadPool(size)
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))

        def spawn(task: Task) -> None:
            pool.spawn(task)

        return spawn

    def start(task: Task) -> None:
        threading.Thread(target=task, name="jobstream-handler", daemon=True).start()

    return start


def os_sleep() -> Callable[[float], None]:
    """``time.sleep`` that blocks only the calling OS thread, even when gevent patched it."""
    if gevent_patched():
        from gevent import monkey

        sleep: Callable[[float], None] = monkey.get_original("time", "sleep")
        return sleep
    return time.sleep
