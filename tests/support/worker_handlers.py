"""A job type the server accepts but leaves to ``python -m jobs.worker``."""

from __future__ import annotations

import os
from typing import Any

from jobs import JobContext, handler


@handler("offsite", worker_only=True)
def offsite(ctx: JobContext, params: dict[str, Any]) -> Any:
    steps = int(params.get("steps", 3))
    for step in range(1, steps + 1):
        ctx.sleep(float(params.get("seconds", 0.6)) / steps)
        ctx.progress(step / steps, f"offsite {step}/{steps}")
    return {"where": "worker", "pid": os.getpid()}
