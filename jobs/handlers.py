"""Job handlers: how they register, and the context they run with.

A handler is a plain function ``run(ctx, params) -> result`` registered by
type name::

    from jobs import JobContext, handler

    @handler("resize", validate=check_resize_params)
    def resize(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        for i, path in enumerate(params["paths"]):
            if ctx.cancelled:
                break  # the job ends cancelled
            ...
            ctx.progress((i + 1) / len(params["paths"]), f"resized {path}")
        return {"done": len(params["paths"])}

Handlers run in real OS threads (see ``jobs.runner``), so they may block or
burn CPU. The context is therefore plain attributes only: ``progress`` and
``cancelled`` read and write fields that the runner's supervising loop polls;
nothing here touches a lock, queue or gevent object.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Params = dict[str, Any]
Validator = Callable[[Params], Params]

# ctx.sleep checks for a cancel at least this often.
SLEEP_SLICE_SECONDS = 0.05
# Progress messages and errors are shown in every tab; keep them short.
MAX_MESSAGE_LENGTH = 1000


class ParamsError(ValueError):
    """Bad params for a job type; the message names the problem (API: 400)."""


class JobCancelled(Exception):
    """Raised by ``ctx.check()``; the job ends ``cancelled``."""


class JobContext:
    """What a running handler sees. Safe to use from any thread."""

    def __init__(self, job_id: str, params: Params, sleep: Callable[[float], None] = time.sleep) -> None:
        self.job_id = job_id
        self.params = params
        self._sleep = sleep
        # Written by the handler thread, read by the supervisor (and vice
        # versa for the cancel flag); single attribute stores are atomic.
        self.fraction = 0.0
        self.message: str | None = None
        self.reported = 0  # bumped on every progress call, so a repeat is seen
        self.cancel_requested = False
        self.finished = False
        self.result: Any = None
        self.failure: str | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1]; published at most 10 times a second."""
        self.fraction = min(1.0, max(0.0, float(fraction)))
        if message is not None:
            self.message = str(message)[:MAX_MESSAGE_LENGTH]
        self.reported += 1

    def check(self) -> None:
        if self.cancel_requested:
            raise JobCancelled()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns False early if the job was cancelled."""
        deadline = time.monotonic() + seconds
        while not self.cancel_requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self._sleep(min(SLEEP_SLICE_SECONDS, left))
        return False


Handler = Callable[[JobContext, Params], Any]


def accept_any(params: Params) -> Params:
    return params


@dataclass(frozen=True)
class JobType:
    name: str
    run: Handler
    validate: Validator
    # Accepted by the server's API but run only by ``python -m jobs.worker``
    # processes: for CPU-heavy work that should not share the server's GIL.
    worker_only: bool = False


class HandlerRegistry:
    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def register(
        self, name: str, validate: Validator = accept_any, *, worker_only: bool = False
    ) -> Callable[[Handler], Handler]:
        """Decorator: ``@registry.register("sleep", validate=...)``."""

        def decorate(run: Handler) -> Handler:
            if name in self._types and self._types[name].run is not run:
                raise ValueError(f"job type {name!r} is already registered")
            self._types[name] = JobType(name, run, validate, worker_only)
            return run

        return decorate

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def names(self, *, in_server: bool = False) -> list[str]:
        """Every type, or (``in_server``) the ones the server's own runner may run."""
        return sorted(n for n, t in self._types.items() if not (in_server and t.worker_only))


# The process-wide registry that ``@handler`` fills; a plain dict, so
# importing a handler module creates no thread or lock.
registry = HandlerRegistry()
handler = registry.register
