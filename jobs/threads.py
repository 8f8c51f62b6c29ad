"""Real OS threads for handlers, under gevent or not.

Handlers may block or burn CPU, so they never run on the gevent loop. Under
the gunicorn gevent worker (``threading`` patched) they run in a
``gevent.threadpool.ThreadPool``: real threads, started from and reported to
the hub. A pool of our own rather than ``get_hub().threadpool``, so busy
handlers cannot starve gevent's own uses of that pool (DNS resolution).

Unpatched (``python -m jobs.worker``, unit tests) each job gets a daemon
``threading.Thread``. Not ``ThreadPoolExecutor``: its threads are joined at
interpreter exit, so one handler that ignores its cancel would stop the
process from exiting. The runner already bounds how many run at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Task = Callable[[], None]


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
