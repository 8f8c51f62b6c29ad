"""Job types for tests, loaded with ``JOBS_HANDLERS=tests.support.job_handlers``."""

from __future__ import annotations

import os
import time
from typing import Any

from jobs import JobContext, handler


@handler("spin")
def spin(ctx: JobContext, params: dict[str, Any]) -> Any:
    """Pure-Python CPU work for ``seconds`` (never sleeps, holds the GIL as much as it can)."""
    deadline = time.monotonic() + float(params.get("seconds", 3))
    loops = 0
    while time.monotonic() < deadline and not ctx.cancelled:
        total = 0
        for i in range(20_000):
            total += i * i
        loops += 1
        ctx.progress(min(1.0, loops / 1000))
    return {"loops": loops}


@handler("chatty")
def chatty(ctx: JobContext, params: dict[str, Any]) -> Any:
    """Reports progress far more often than it may be published."""
    count = int(params.get("reports", 2000))
    pause = float(params.get("seconds", 1.0)) / count
    for i in range(1, count + 1):
        ctx.progress(i / count, f"report {i}")
        ctx.sleep(pause)
    return {"reports": count}


@handler("tally")
def tally(ctx: JobContext, params: dict[str, Any]) -> Any:
    """Appends ``<job id> <pid>`` to ``params.path``: proof of how often each job ran, and where."""
    ctx.sleep(float(params.get("seconds", 0)))
    fd = os.open(params["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{ctx.job_id} {os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return {"pid": os.getpid()}


@handler("unjsonable")
def unjsonable(ctx: JobContext, params: dict[str, Any]) -> Any:
    return {"value": {1, 2}}


@handler("stubborn")
def stubborn(ctx: JobContext, params: dict[str, Any]) -> Any:
    """Ignores cancellation: burns CPU for ``seconds`` whatever happens."""
    deadline = time.monotonic() + float(params.get("seconds", 60))
    while time.monotonic() < deadline:
        sum(i * i for i in range(10_000))
        ctx.progress(0.5)
    return None
