"""The built-in job types: ``sleep`` (progress and cancellation) and ``fail`` (the error path)."""

from __future__ import annotations

from typing import Any

from jobs.handlers import JobContext, Params, ParamsError, handler

MAX_SLEEP_SECONDS = 3600
MAX_STEPS = 1000


def _only(params: Params, allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ParamsError(f"unknown params: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _number(params: Params, key: str, default: float, low: float, high: float, integer: bool = False) -> Any:
    value = params.get(key, default)
    # bool is an int in Python, never a number in JSON terms.
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ParamsError(f"params.{key} must be {kind} from {low:g} to {high:g}, got {value!r}")
    return value


def validate_sleep(params: Params) -> Params:
    _only(params, {"seconds", "steps"})
    return {
        "seconds": _number(params, "seconds", 5, 0, MAX_SLEEP_SECONDS),
        "steps": _number(params, "steps", 10, 1, MAX_STEPS, integer=True),
    }


def validate_fail(params: Params) -> Params:
    _only(params, {"message"})
    message = params.get("message", "failed on purpose")
    if not isinstance(message, str):
        raise ParamsError(f"params.message must be a string, got {message!r}")
    return {"message": message}


@handler("sleep", validate=validate_sleep)
def sleep(ctx: JobContext, params: Params) -> Any:
    """Sleeps ``seconds`` in ``steps`` equal steps, reporting progress after each."""
    steps: int = params["steps"]
    for step in range(1, steps + 1):
        if not ctx.sleep(params["seconds"] / steps):
            return None  # cancelled within this step
        ctx.progress(step / steps, f"step {step}/{steps}")
    return {"slept": params["seconds"], "steps": steps}


@handler("fail", validate=validate_fail)
def fail(ctx: JobContext, params: Params) -> Any:
    raise RuntimeError(params["message"])
