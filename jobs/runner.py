"""The runner: claims pending jobs, runs their handlers, and records every change.

One supervising loop (a greenlet under gevent, a thread otherwise) owns all
store writes and publishes of this process's running jobs; handlers run in
real OS threads (``jobs.threads``) and talk to it only through the plain
attributes of their ``JobContext``. Each pass of the loop (``step``):

1. finishes jobs whose handler returned or raised (never coalesced);
2. writes and publishes progress that changed, at most once per
   ``PROGRESS_INTERVAL_SECONDS`` per job: this is the coalescing;
3. every ``POLL_SECONDS``: reads cancel requests made by other processes
   and looks for pending jobs created by other processes;
   heartbeats every ``HEARTBEAT_SECONDS``; every ``RECOVER_SECONDS`` recovers jobs of runners that died meanwhile;
4. claims the oldest pending jobs while fewer than ``concurrency`` run.

The loop waits ``PROGRESS_INTERVAL_SECONDS`` while jobs run and
``POLL_SECONDS`` when idle; ``wake()`` (a job created or cancelled in this
process) ends the wait at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jobs.handlers import MAX_MESSAGE_LENGTH, HandlerRegistry, JobCancelled, JobContext, JobType
from jobs.model import Job
from jobs.owners import HEARTBEAT_SECONDS
from jobs.states import Status
from jobs.store import JobStore
from jobs.threads import Task, os_sleep, os_thread_starter
from server.background import Background

log = logging.getLogger("jobstream.jobs")

PROGRESS_INTERVAL_SECONDS = 0.1  # at most 10 progress events per second per job
POLL_SECONDS = 0.5
RECOVER_SECONDS = 10.0

Announce = Callable[[dict[str, Any]], None]


@dataclass(eq=False)
class Running:
    job: Job
    ctx: JobContext
    published: int = 0  # ctx.reported at the last progress write
    published_at: float = float("-inf")
    cancelled_by_user: bool = False
    # Recovered by another process: its record is final. Kept (unwritten)
    # until its thread ends, so the thread count stays within concurrency.
    lost: bool = False


def execute(job_type: JobType, ctx: JobContext) -> None:
    """Runs in the handler's OS thread; only writes ``ctx`` attributes."""
    ok = False
    try:
        ctx.result = job_type.run(ctx, ctx.params)
        ok = True
    except JobCancelled:
        ok = True
    except Exception as exc:
        ctx.failure = (str(exc) or type(exc).__name__)[:MAX_MESSAGE_LENGTH]
    finally:
        if not ok and ctx.failure is None:
            ctx.failure = "handler aborted"
        ctx.finished = True


@dataclass
class Runner:
    store: JobStore
    handlers: HandlerRegistry
    announce: Announce
    concurrency: int = 4
    in_server: bool = False  # then worker_only types are left to python -m jobs.worker
    clock: Callable[[], float] = time.monotonic
    start_thread: Callable[[Task], None] | None = None
    # Called once per job this runner finished (metrics: job duration).
    on_finished: Callable[[Job], None] | None = None
    running: dict[str, Running] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._claim_lock = threading.Lock()
        self._wake: threading.Event | None = None
        self._loop_thread = Background("jobstream-runner", self._loop)
        self._claim_due = True
        self._stopping = False
        self._next_poll = self._next_recover = self._next_heartbeat = float("-inf")
        self._sleep: Callable[[float], None] = time.sleep

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Recover interrupted jobs, then run the loop. Call after gevent patched."""
        if self._loop_thread.started:
            return
        if self.start_thread is None:
            self.start_thread = os_thread_starter(self.concurrency)
        self._sleep = os_sleep()
        self._wake = threading.Event()
        try:
            self.store.heartbeat()
            self._announce_all(self.store.recover_interrupted())
            self._next_recover = self.clock() + RECOVER_SECONDS
        except Exception:
            # The store can be unreachable while this process boots (Redis
            # down); the loop heartbeats and recovers once it answers.
            log.warning("job store unavailable at start; the runner keeps trying", exc_info=True)
        self._loop_thread.start()

    def stop(self, grace_seconds: float = 0.0) -> None:
        """Stop claiming, ask running handlers to stop, and mark what is still
        running ``error``/``interrupted`` (after up to ``grace_seconds``)."""
        if not self._loop_thread.started or self._stopping:
            return
        self._stopping = True
        for item in self.running.values():
            item.ctx.cancel_requested = True
        self._loop_thread.request_stop()
        if self._wake is not None:
            self._wake.set()
        self._loop_thread.join(2.0)
        # The loop has ended: from here on this caller alone touches ``running``.
        pause = threading.Event()
        deadline = self.clock() + grace_seconds
        while any(not i.ctx.finished for i in self.running.values()) and self.clock() < deadline:
            pause.wait(PROGRESS_INTERVAL_SECONDS)
            self._finish_done()
        self._finish_done()
        self._announce_all(self.store.release())
        self.running.clear()

    @contextmanager
    def holding_claims(self) -> Iterator[None]:
        """This process claims nothing while held: a job created and announced
        inside is never started here before its ``created`` event went out.

        Held across a publish, which never blocks with the memory broker; with
        a network broker only this runner's next claim waits, never the loop.
        """
        with self._claim_lock:
            yield

    def wake(self) -> None:
        self._claim_due = True
        if self._wake is not None:
            self._wake.set()

    def cancel_local(self, job_id: str) -> None:
        """A cancel requested in this process: tell the handler without waiting for the poll."""
        item = self.running.get(job_id)
        if item is not None:
            item.cancelled_by_user = True
            item.ctx.cancel_requested = True
            self.wake()

    def _loop(self, stop: threading.Event) -> None:
        assert self._wake is not None
        wake = self._wake
        failing = False
        while not stop.is_set():
            wake.clear()  # before the pass: a wake() during it makes the wait below return at once
            try:
                self.step(self.clock())
            except Exception:
                # One traceback per run of failures (an outage fails every pass).
                if not failing:
                    log.exception("job runner pass failed; retrying")
                failing = True
            else:
                if failing:
                    log.info("job runner passes succeed again", extra={"event": "runner_recovered"})
                failing = False
            wake.wait(PROGRESS_INTERVAL_SECONDS if self.running else POLL_SECONDS)

    # -- one pass --------------------------------------------------------------

    def step(self, now: float) -> None:
        self._finish_done()
        for item in list(self.running.values()):
            if item.lost:
                continue
            if item.ctx.reported != item.published and now - item.published_at >= PROGRESS_INTERVAL_SECONDS:
                self._write_progress(item, now)
        if now >= self._next_poll:
            self._next_poll = now + POLL_SECONDS
            self._claim_due = True
            for job_id in self.store.cancel_requested(list(self.running)):
                item = self.running[job_id]
                item.cancelled_by_user = item.ctx.cancel_requested = True
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_SECONDS
            self.store.heartbeat()
        if now >= self._next_recover:
            self._next_recover = now + RECOVER_SECONDS
            self._announce_all(self.store.recover_interrupted())
        while self._claim_due and not self._stopping and len(self.running) < self.concurrency:
            with self._claim_lock:
                job = self.store.claim(self.handlers.names(in_server=self.in_server))
            if job is None:
                self._claim_due = False
                break
            self._launch(job)

    def _launch(self, job: Job) -> None:
        self._announce(job)
        job_type = self.handlers.get(job.type)
        assert job_type is not None, "claim only takes types this runner knows"
        assert self.start_thread is not None
        ctx = JobContext(job.id, job.params, sleep=self._sleep)
        self.running[job.id] = Running(job, ctx)
        self.start_thread(lambda: execute(job_type, ctx))

    def _write_progress(self, item: Running, now: float) -> None:
        reported = item.ctx.reported
        job = self.store.progress(item.job.id, item.ctx.fraction, item.ctx.message)
        item.published, item.published_at = reported, now
        if job is None:
            self._lost(item)
            return
        item.job = job
        self._announce(job)

    def _finish_done(self) -> None:
        for job_id, item in list(self.running.items()):
            if not item.ctx.finished:
                continue
            ctx = item.ctx
            if item.lost:
                del self.running[job_id]
                self._claim_due = True
                continue
            if self._stopping and ctx.cancel_requested and not item.cancelled_by_user:
                continue  # stopped by shutdown, not by a user: release() marks it interrupted
            fields: dict[str, Any] = {"progress": ctx.fraction, "message": ctx.message}
            if item.cancelled_by_user:
                status = Status.CANCELLED
            elif ctx.failure is not None:
                status, fields["error"] = Status.ERROR, ctx.failure
            else:
                status, fields["result"], fields["progress"] = Status.COMPLETED, ctx.result, 1.0
            try:
                job = self.store.finish(job_id, status, **fields)
            except (TypeError, ValueError) as exc:  # the result is not JSON
                job = self.store.finish(job_id, Status.ERROR, error=f"result is not JSON: {exc}", progress=ctx.fraction)
            # Forgotten only once recorded: a failed write (database busy)
            # raises out of this pass and the next pass tries again.
            del self.running[job_id]
            self._claim_due = True
            if job is None:
                log.warning("job no longer ours", extra={"event": "job_lost", "job_id": job_id})
            else:
                self._announce(job)
                if self.on_finished is not None:
                    self.on_finished(job)

    def _lost(self, item: Running) -> None:
        # Another process recovered this job (it thought we were dead); its
        # record is final, so stop the handler and write nothing more.
        item.ctx.cancel_requested = True
        item.lost = True
        log.warning("job no longer ours", extra={"event": "job_lost", "job_id": item.job.id})

    def _announce(self, job: Job) -> None:
        try:
            self.announce(job.to_json())
        except Exception:
            # The store is the record; a stream that missed this change gets
            # the job's state from the next change or its snapshot.
            log.exception("job change not published", extra={"event": "job_publish_failed", "job_id": job.id})

    def _announce_all(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._announce(job)
