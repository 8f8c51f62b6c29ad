"""Importing the app must start nothing: gevent patches after gunicorn imports it."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import ROOT

CHECK = """
import threading, sys, os
before = threading.active_count()
import streaming, jobs
import app
assert threading.active_count() == before, threading.enumerate()
assert not app.app.extensions["jobstream"].started
print("ok")
"""

MASTER_THEN_PATCH = """
# What gunicorn does: the master imports gunicorn.conf.py unpatched, forks,
# and the worker patches before importing the app.
import runpy
runpy.run_path("gunicorn.conf.py")
from gevent import monkey
monkey.patch_all()
import gevent.lock, threading
import app
svc = app.app.extensions["jobstream"]
assert isinstance(svc.registry._lock, type(gevent.lock.BoundedSemaphore())) or "gevent" in type(svc.registry._lock).__module__, type(svc.registry._lock)
import queue
from streaming.core.registry import Client
print("ok")
"""


def run(code: str, tmp: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "JOBS_DB": f"{tmp}/jobs.db", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_importing_app_starts_no_thread(tmp_path: object) -> None:
    proc = run(CHECK, str(tmp_path))
    assert proc.stdout.strip() == "ok", proc.stderr


def test_locks_are_gevent_locks_when_patched_after_the_config_import(tmp_path: object) -> None:
    proc = run(MASTER_THEN_PATCH, str(tmp_path))
    assert proc.stdout.strip() == "ok", proc.stderr
