"""A job type only ``python -m jobs.worker`` knows, so the server's own runner never claims it."""

from __future__ import annotations

from typing import Any

from jobs import JobContext, handler


@handler("offsite")
def offsite(ctx: JobContext, params: dict[str, Any]) -> Any:
    steps = int(params.get("steps", 3))
    for step in range(1, steps + 1):
        ctx.sleep(float(params.get("seconds", 0.6)) / steps)
        ctx.progress(step / steps, f"offsite {step}/{steps}")
    return {"where": "worker"}
