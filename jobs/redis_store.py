"""``JobStore`` on Redis: one queue and one job table for every worker and host.

Chosen by ``jobs.wiring.make_store`` when ``REDIS_URL`` is set. Layout (prefix ``jobstream:``):

* ``job:<id>`` - a hash per job: the ``Job`` fields (JSON for params and
  result; a missing field is ``None``), plus ``seq``, ``owner``, ``attempts``
  and ``cancel_requested``;
* ``jobs:all`` / ``jobs:status:<status>`` - sorted sets by ``seq`` (creation
  order, from ``INCR jobs:seq``): pages and cursors;
* ``jobs:owner:<sub>`` / ``jobs:unowned`` - the same by owner (``owner_sub``
  on the hash; ``owner`` there is the runner): what a reader who is not an
  admin sees is the merge of its own set and the unowned one;
* ``jobs:pending:<type>`` - pending jobs per type, oldest first: the queue;
* ``jobs:ids`` - every id at score 0, for prefix selection (``ZRANGEBYLEX``);
* ``jobs:counts`` - a hash of counts per status, for ``/health``;
* ``jobs:runners`` - owner -> last heartbeat (ms), for recovery.

Every write is one Lua script (``jobs.redis_scripts``), so Redis runs it
atomically: a status change moves the job between the sets and adjusts the
counts in the same step, and ``claim`` (take the oldest pending job of the
given types) hands a job to exactly one runner among every process on every
host. Status writes are conditional on the expected status (and owner), like
the SQLite store's. Every key carries the ``{jobstream}`` hash tag, so on
Redis Cluster all of them (and the event stream) are in one slot: a script
computes its keys from the prefix and passes one (``jobs:counts``) as
``KEYS[1]``, which routes it to that slot's primary.

With ``REDIS_MIN_REPLICAS_ACK`` the writes an API request is answered for
(create, cancel, withdraw) wait for that many replicas (``WAIT``) or raise
``BrokerUnavailable`` (a create is then withdrawn again, when still pending);
the runner's writes wait too but only log a shortfall: nobody is answered for
them, and failing them would leave a finished job's record unannounced.

There is no change feed: every process (``python -m jobs.worker`` too)
publishes its own job changes to the shared event stream, so ``changes`` is
always empty. A cancel sets ``cancel_requested`` on the hash; the runner that
owns the job polls ``cancel_requested`` and stops it, wherever it runs.

Redis errors become ``BrokerUnavailable``: the API answers 503.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterator
from typing import Any

import redis

from jobs.model import Job, new_job_id, now_ms
from jobs.owners import Owner, is_alive
from jobs.redis_scripts import SCRIPTS
from jobs.states import InvalidTransition, Status, check_transition
from jobs.store import EVERYONE, MAX_PAGE, JobNotFound, Page, Selection, Viewer, decode_cursor, encode_cursor
from server.redis_url import RedisTarget, as_target
from streaming import REDIS_PREFIX, BrokerUnavailable, RedisDurable, redis_outage, redis_rename_legacy_keys
from streaming import redis_connect as connect

PREFIX = REDIS_PREFIX
INTERRUPTED = "interrupted"
# Jobs a page or snapshot reads at most while it skips those its reader may
# not see (a status-filtered page of someone with few jobs among many).
SCAN_LIMIT = 5000


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _optional_int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _fields(flat: list[Any]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _job(fields: dict[str, str]) -> Job:
    return Job(
        id=fields["id"],
        type=fields["type"],
        name=fields["name"],
        params=json.loads(fields["params"]),
        status=Status(fields["status"]),
        progress=float(fields["progress"]),
        message=fields.get("message"),
        result=json.loads(fields["result"]) if "result" in fields else None,
        error=fields.get("error"),
        created_at=int(fields["created_at"]),
        started_at=_optional_int(fields.get("started_at")),
        finished_at=_optional_int(fields.get("finished_at")),
        updated_at=int(fields["updated_at"]),
        version=int(fields["version"]),
        owner=fields.get("owner_sub"),
    )


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        if not redis_outage(exc):
            raise  # a bug (a script error), not an outage
        raise BrokerUnavailable(f"redis: {exc}") from exc


class RedisJobStore:
    def __init__(self, target: RedisTarget | str, owner: Owner | None = None, prefix: str = PREFIX) -> None:
        self.target = as_target(target)
        self.prefix = prefix
        self.owner = owner or Owner.current()
        self.instance = str(self.owner)
        self._client: Any = None  # redis.Redis or redis.RedisCluster
        self._durable: RedisDurable | None = None
        self._scripts: dict[str, Any] = {}
        self._indexed = False  # INDEX_UNOWNED ran (on the first read that needs it)
        self._renamed = prefix != PREFIX  # the legacy keys' rename is the default prefix's

    @property
    def redis(self) -> Any:
        # Made on first use: inside the worker, after gevent patched sockets.
        if self._client is None:
            client = connect(self.target)
            for name, body in SCRIPTS.items():
                self._scripts[name] = client.register_script(body)
            self._durable = RedisDurable(client, self.target, f"{self.prefix}jobs:counts")
            self._client = client
        if not self._renamed:
            self._rename_legacy_keys(self._client)
        return self._client

    def _rename_legacy_keys(self, client: Any) -> None:
        if isinstance(client, redis.RedisCluster):
            self._renamed = True  # a Cluster never held the untagged names
            return
        with contextlib.suppress(redis.RedisError):  # down: the next use tries again
            redis_rename_legacy_keys(client)
            self._renamed = True

    def _run(self, script: str, *args: Any, strict: bool = True) -> Any:
        self.redis  # noqa: B018 - makes the client, its scripts and its Durable
        assert self._durable is not None
        keys = [f"{self.prefix}jobs:counts"]  # routes the script to the slot of every job key
        with _unavailable():
            return self._durable.write(
                lambda c: self._scripts[script](keys=keys, args=[self.prefix, *args], client=c), strict=strict
            )

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _load(self, job_ids: Collection[str]) -> list[tuple[int, Job]]:
        """``(seq, job)`` for each id that still exists, in the order given."""
        if not job_ids:
            return []
        with _unavailable():
            pipe = self.redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(self._key(job_id))
            rows: list[dict[str, str]] = pipe.execute()
        return [(int(row["seq"]), _job(row)) for row in rows if row]

    def _update(
        self,
        job_id: str,
        expect: Status,
        new: Status | None,
        owner: str | None,
        values: dict[str, Any],
    ) -> Job | None:
        now = now_ms()
        sets = {"updated_at": now, **{k: v for k, v in values.items() if v is not None}}
        deletes = [k for k, v in values.items() if v is None]
        pairs = [item for kv in sets.items() for item in kv]
        flat = self._run(
            "update",
            *(job_id, expect.value, owner or "", new.value if new else "", len(sets), *pairs, *deletes),
            strict=False,
        )
        return _job(_fields(flat)) if flat else None

    # -- the API's operations --------------------------------------------------

    def create(self, type: str, name: str, params: dict[str, Any], owner: str | None = None) -> Job:
        job_id = new_job_id()
        try:
            flat = self._run("create", job_id, type, name, _dumps(params), now_ms(), owner or "")
        except BrokerUnavailable:
            # Not confirmed means not accepted: take it back while nobody ran it
            # (no WAIT: the replicas that missed the create miss nothing).
            with contextlib.suppress(BrokerUnavailable, redis.RedisError):
                self._run_unconfirmed("withdraw", job_id)
            raise
        return _job(_fields(flat))

    def _run_unconfirmed(self, script: str, *args: Any) -> Any:
        client = self.redis
        with _unavailable():
            return self._scripts[script](keys=[f"{self.prefix}jobs:counts"], args=[self.prefix, *args], client=client)

    def get(self, job_id: str) -> Job | None:
        found = self._load([job_id])
        return found[0][1] if found else None

    def _visible_keys(self, viewer: Viewer) -> list[str]:
        keys = [f"{self.prefix}jobs:unowned"]
        if viewer.sub is not None:
            keys.append(f"{self.prefix}jobs:owner:{viewer.sub}")
        return keys

    def page(
        self, status: Status | None = None, limit: int = 50, cursor: str | None = None, viewer: Viewer = EVERYONE
    ) -> Page:
        before = decode_cursor(cursor) if cursor else None
        if viewer.everything:
            key = f"{self.prefix}jobs:status:{status.value}" if status else f"{self.prefix}jobs:all"
            found, resume = self._scan([key], before, limit + 1)
        else:
            keep = (lambda job: job.status is status) if status else None
            found, resume = self._scan(self._visible_keys(viewer), before, limit + 1, keep)
        if len(found) > limit:
            return Page([job for _, job in found[:limit]], encode_cursor(found[limit - 1][0]))
        return Page([job for _, job in found], encode_cursor(resume) if resume is not None else None)

    def _scan(
        self, keys: list[str], before: int | None, want: int, keep: Callable[[Job], bool] | None = None
    ) -> tuple[list[tuple[int, Job]], int | None]:
        """Up to ``want`` ``(seq, job)`` from the sorted sets ``keys`` merged,
        newest first below ``before``, that ``keep`` accepts; and the seq to
        go on below when the scan stopped at ``SCAN_LIMIT`` (else None).
        Without ``keep`` it is one round trip for the ids and one for the jobs."""
        if not self._indexed:
            self._run_unconfirmed("index_unowned")  # raises BrokerUnavailable: retried by the next read
            self._indexed = True
        found: list[tuple[int, Job]] = []
        scanned = 0
        while len(found) < want:
            if scanned >= SCAN_LIMIT:
                return found, before
            batch = want - len(found)
            top = f"({before}" if before is not None else "+inf"
            with _unavailable():
                pipe = self.redis.pipeline(transaction=False)
                for key in keys:
                    pipe.zrevrangebyscore(key, top, "-inf", start=0, num=batch, withscores=True)
                replies = pipe.execute()
            scores = {member: int(score) for reply in replies for member, score in reply}
            merged = sorted(scores, key=scores.__getitem__, reverse=True)[:batch]
            if merged:
                scanned += len(merged)
                before = scores[merged[-1]]
                found.extend(item for item in self._load(merged) if keep is None or keep(item[1]))
            if len(merged) < batch:
                break  # every set is exhausted
        return found, None

    def newest(self, selection: Selection, limit: int = MAX_PAGE, viewer: Viewer = EVERYONE) -> list[Job]:
        if selection.everything:
            keys = [f"{self.prefix}jobs:all"] if viewer.everything else self._visible_keys(viewer)
            return [job for _, job in self._scan(keys, None, limit)[0]]
        with _unavailable():
            ids: set[str] = set(selection.ids)
            for prefix in selection.id_prefixes:
                if prefix:
                    lex = f"{self.prefix}jobs:ids"
                    ids.update(self.redis.zrangebylex(lex, f"[{prefix}", f"[{prefix}\xff"))  # type: ignore[arg-type]
        found = sorted(self._load(sorted(ids)), key=lambda item: item[0], reverse=True)
        return [job for _, job in found if viewer.sees(job)][:limit]

    def withdraw(self, job_id: str) -> bool:
        return bool(self._run("withdraw", job_id))

    def request_cancel(self, job_id: str) -> Job:
        reply = self._run("cancel", job_id, now_ms())
        if reply[0] == "missing":
            raise JobNotFound(job_id)
        if reply[0] == "terminal":
            raise InvalidTransition(Status(reply[1]), Status.CANCELLED)
        return _job(_fields(reply[1:]))

    # -- the runner's operations -----------------------------------------------

    def claim(self, types: Collection[str]) -> Job | None:
        if not types:
            return None
        flat = self._run("claim", now_ms(), self.instance, *types, strict=False)
        return _job(_fields(flat)) if flat else None

    def progress(self, job_id: str, fraction: float, message: str | None) -> Job | None:
        values: dict[str, Any] = {"progress": repr(float(fraction))}
        if message is not None:
            values["message"] = message
        return self._update(job_id, Status.IN_PROGRESS, None, self.instance, values)

    def finish(
        self,
        job_id: str,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> Job | None:
        check_transition(Status.IN_PROGRESS, status)
        values: dict[str, Any] = {
            "result": None if result is None else _dumps(result),
            "error": error,
            "finished_at": now_ms(),
        }
        if progress is not None:
            values["progress"] = repr(float(progress))
        if message is not None:
            values["message"] = message
        return self._update(job_id, Status.IN_PROGRESS, status, self.instance, values)

    def cancel_requested(self, job_ids: Collection[str]) -> set[str]:
        if not job_ids:
            return set()
        ordered = list(job_ids)
        with _unavailable():
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ordered:
                pipe.hget(self._key(job_id), "cancel_requested")
            flags = pipe.execute()
        return {job_id for job_id, flag in zip(ordered, flags, strict=True) if flag == "1"}

    def heartbeat(self) -> None:
        with _unavailable():
            self.redis.hset(f"{self.prefix}jobs:runners", self.instance, now_ms())

    def recover_interrupted(self) -> list[Job]:
        now = now_ms()
        with _unavailable():
            running: list[str] = self.redis.zrange(f"{self.prefix}jobs:status:in_progress", 0, -1)  # type: ignore[assignment]
            pipe = self.redis.pipeline(transaction=False)
            for job_id in running:
                pipe.hget(self._key(job_id), "owner")
            owners: dict[str, str | None] = dict(zip(running, pipe.execute(), strict=True))
            stored: dict[str, str] = self.redis.hgetall(f"{self.prefix}jobs:runners")  # type: ignore[assignment]
            beats = {o: int(ms) for o, ms in stored.items()}
            gone = [o for o, beat in beats.items() if o != self.instance and not is_alive(o, beat, now, self.owner)]
            if gone:
                self.redis.hdel(f"{self.prefix}jobs:runners", *gone)
        dead = {
            owner
            for owner in set(owners.values())
            if owner and owner != self.instance and not is_alive(owner, beats.get(owner), now, self.owner)
        }
        return self._interrupt([(job_id, owner) for job_id, owner in owners.items() if owner and owner in dead])

    def release(self) -> list[Job]:
        with _unavailable():
            self.redis.hdel(f"{self.prefix}jobs:runners", self.instance)
            running: list[str] = self.redis.zrange(f"{self.prefix}jobs:status:in_progress", 0, -1)  # type: ignore[assignment]
        return self._interrupt([(job_id, self.instance) for job_id in running])

    def _interrupt(self, jobs: list[tuple[str, str]]) -> list[Job]:
        """in_progress -> error "interrupted", each only if ``owner`` still owns it."""
        done = []
        for job_id, owner in jobs:
            values = {"error": INTERRUPTED, "finished_at": now_ms()}
            job = self._update(job_id, Status.IN_PROGRESS, Status.ERROR, owner, values)
            if job is not None:
                done.append(job)
        return done

    # -- health and the change feed --------------------------------------------

    def counts(self) -> dict[str, int]:
        with _unavailable():
            stored = self.redis.hgetall(f"{self.prefix}jobs:counts")
        counts = {s.value: int(stored.get(s.value, 0)) for s in Status}
        return {"total": sum(counts.values()), **counts}

    def changes(self, after: int, limit: int = 1000) -> tuple[list[dict[str, Any]], int]:
        return [], after  # every writer publishes its own changes to the Redis stream

    def last_change(self) -> int:
        return 0

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._durable = None


__all__ = ["RedisJobStore"]
