"""gunicorn settings for Jobstream.

Imported by the gunicorn master *before* gevent patches anything, so it
imports only the standard library, ``server.settings`` and ``server.logs``
(themselves stdlib only); the names under ``TYPE_CHECKING`` are for mypy.
The app is never preloaded: each worker imports it after patching.
prometheus_client in particular is imported only inside hooks: it chooses
single- or multi-process mode at import, from ``PROMETHEUS_MULTIPROC_DIR``,
which ``on_starting`` sets before the first worker is forked.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING

from server.logs import LOGGER_CLASS, gunicorn_logconfig
from server.settings import ConfigError, Settings

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

    from streaming.scaleout.instance import InstanceTable

try:
    _settings = Settings.from_env(os.environ)
except ConfigError as exc:
    # One line naming the variable, then a non-zero exit before any worker
    # boots, so a bad value cannot cause an endless respawn loop.
    sys.stderr.write(
        json.dumps({"level": "CRITICAL", "message": str(exc), "variable": exc.name, "value": exc.value}) + "\n"
    )
    sys.exit(2)

bind = [_settings.bind]  # HOST:PORT, 127.0.0.1 unless HOST says otherwise
workers = _settings.web_concurrency
# gunicorn's gevent worker, with a front door for plain GET /stream
# (server/worker.py, server/front.py).
worker_class = "server.worker.JobstreamWorker"
preload_app = False
# Every open stream holds one slot of the worker's gevent pool. Leave room
# above the stream limit so /health, /events and refusals never queue
# behind streams.
worker_connections = _settings.max_connections + max(100, _settings.max_connections // 10)
# Streams end themselves on SIGTERM (streaming.ops.lifecycle); this is the
# backstop for anything else.
graceful_timeout = int(_settings.drain_seconds) + 15
timeout = 30
keepalive = 5
loglevel = _settings.log_level
# gunicorn reads FORWARDED_ALLOW_IPS itself (its wsgi.url_scheme from
# X-Forwarded-Proto); give it the value the app parsed, so the two agree.
forwarded_allow_ips = ",".join(_settings.forwarded_allow_ips)
# Several instances may share a host (and the tests start many).
control_socket_disable = True
logconfig_dict = gunicorn_logconfig(_settings.log_level)
logger_class = LOGGER_CLASS

# Two descriptors can be needed per stream during shutdown; ask for enough.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_want = min(_hard, max(_soft, 2 * worker_connections + 256))
if _want > _soft:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_want, _hard))


# Stream limits and /health totals are per instance: with several workers
# they live in a table the master shares with every worker it forks
# (streaming/scaleout/instance.py). Made in on_starting, never at import. A
# HUP re-reads this file into fresh globals while the old workers still
# drain their streams, so the table is kept on the arbiter and found again
# in on_reload: old and new workers count against one limit.
_table: InstanceTable | None = None
_TABLE_ATTR = "jobstream_instance_table"


def _ensure_table(server: Arbiter) -> None:
    global _table
    if _table is not None or workers <= 1:
        return
    rows = 2 * workers + 8  # room for old and new workers side by side during a reload
    kept = getattr(server, _TABLE_ATTR, None)
    if kept is not None and kept.rows >= rows:
        _table = kept
        return
    from streaming.scaleout.instance import InstanceTable

    _table = InstanceTable.create(rows=rows)
    setattr(server, _TABLE_ATTR, _table)


def on_reload(server: Arbiter) -> None:
    _ensure_table(server)


def post_worker_init(worker: Worker) -> None:
    from streaming.ops.lifecycle import post_worker_init as start

    start(worker, _table)


def worker_int(worker: Worker) -> None:
    from streaming.ops.lifecycle import worker_int as stop

    stop(worker)


# -- Prometheus multiprocess files (streaming/ops/metrics.py) ---------------------

_METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_own_metrics_dir: list[str] = []  # the directory made here, removed on exit


def on_starting(server: Arbiter) -> None:
    """Master, before any fork: the instance table, and an empty directory for metric files."""
    _ensure_table(server)
    directory = os.environ.get(_METRICS_DIR_ENV)
    if directory:
        # An operator's directory: values of a previous run must not be added in.
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))
    else:
        directory = tempfile.mkdtemp(prefix="jobstream-metrics-")
        _own_metrics_dir.append(directory)
        os.environ[_METRICS_DIR_ENV] = directory


def child_exit(server: Arbiter, worker: Worker) -> None:
    """Master, after a worker exited (or was killed): free its row of the
    instance table and drop its live gauges.

    This is ``prometheus_client.multiprocess.mark_process_dead``, done with
    ``os`` alone: importing prometheus_client here would import ``ssl`` and
    ``socket`` into the master, so every later-forked worker would have them
    before gevent patches (gevent warns; ssl would stay unpatched). Its
    counters stay on disk, as counters must; tests/unit/test_metrics.py checks
    both against the pinned prometheus_client.
    """
    if _table is not None:
        _table.release_pid(worker.pid)
    directory = os.environ.get(_METRICS_DIR_ENV)
    if not directory:
        return
    for name in os.listdir(directory):
        if name.startswith("gauge_live") and name.endswith(f"_{worker.pid}.db"):
            try:
                os.remove(os.path.join(directory, name))
            except FileNotFoundError:
                pass


def on_exit(server: Arbiter) -> None:
    for directory in _own_metrics_dir:
        shutil.rmtree(directory, ignore_errors=True)
