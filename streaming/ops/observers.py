"""How other parts of the app hear what the streaming service does.

An observer subclasses ``Observer`` and overrides the methods it cares
about; ``StreamingService.observe`` registers it. This is the one way in:
metrics, the jobs package and the instance stats copier all come through
here, and nothing assigns another module's attributes. (The Redis broker's
wait for the host's other workers is handed over by ``share_limits``.)

Each hook runs once per stream, publish, replay, reset, job or lifecycle
step, never per event per client, and must not block (under gevent a slow
observer stalls every stream of the worker). A hook that raises is logged
and does not stop the others, except in ``started`` where a failure is also
logged and the worker keeps serving (gunicorn takes a failed boot as fatal).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streaming.core.client import Client
    from streaming.core.events import Event
    from streaming.core.reasons import CloseReason, RefusalReason

log = logging.getLogger("jobstream.streaming")

HOOKS = (
    "admitted",
    "closed",
    "published",
    "replayed",
    "reset",
    "job_finished",
    "canary_arrived",
    "canary_missed",
    "started",
    "stopping",
)


class Observer:
    """No-op hooks; override any of them."""

    def admitted(self, client: Client, refused: RefusalReason | None) -> None:
        """After every admission decision (``refused`` is ``None`` when let in)."""

    def closed(self, client: Client, reason: CloseReason) -> None:
        """A stream left the registry."""

    def published(self, event: Event, seconds: float) -> None:
        """An event was accepted; ``seconds`` is the publish's duration."""

    def replayed(self, trigger: str) -> None:
        """History was replayed to a stream: ``reconnect`` or ``overflow``."""

    def reset(self, reason: str) -> None:
        """A stream got ``event: reset``: ``malformed``, ``expired``, ``unknown`` or ``overflow``."""

    def job_finished(self, status: str, seconds: float) -> None:
        """A job reached a final status after running ``seconds``."""

    def canary_arrived(self, seconds: float) -> None:
        """This worker's canary came back through its fan-out after ``seconds`` (late ones too)."""

    def canary_missed(self) -> None:
        """A canary was not back when the next one was due (``streaming.ops.canary``)."""

    def started(self) -> None:
        """The worker's service started (after gevent patched): start background work."""

    def stopping(self) -> None:
        """Shutdown began, streams still open: stop background work, say goodbye."""


class Hooks:
    """The registered observers' overridden methods, one tuple per hook.

    Only methods an observer overrides are kept, so a hook nobody cares about
    costs one empty loop.
    """

    def __init__(self) -> None:
        self._hooks: dict[str, tuple[Callable[..., None], ...]] = dict.fromkeys(HOOKS, ())

    def add(self, observer: Observer) -> None:
        for name in HOOKS:
            method = getattr(type(observer), name, None)
            if method is not None and method is not getattr(Observer, name):
                self._hooks[name] = (*self._hooks[name], getattr(observer, name))

    def get(self, name: str) -> tuple[Callable[..., None], ...]:
        return self._hooks[name]

    def call(self, name: str, *args: Any) -> None:
        for hook in self._hooks[name]:
            try:
                hook(*args)
            except Exception:
                log.exception("observer failed", extra={"event": "observer_failed", "hook": name})
