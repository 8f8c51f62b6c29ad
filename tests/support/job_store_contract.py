"""The ``JobStore`` contract: what every store must do, written once.

``tests/unit/test_job_stores.py`` runs it against SQLite and
``tests/integration/test_job_stores_redis.py`` against a real redis-server.
What only one store does (SQLite's change feed and count triggers, Redis's AOF
and outages) is tested in ``tests/unit/test_jobs_store.py`` and
``tests/integration/test_redis_jobs.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from jobs.owners import Owner
from jobs.states import InvalidTransition, Status
from jobs.store import EVERYONE, InvalidCursor, JobNotFound, JobStore, Selection, Viewer
from tests.support.claims import claim_concurrently

MakeStore = Callable[..., JobStore]


def stores(new: Callable[[Owner | None], JobStore]) -> Iterator[MakeStore]:
    """A ``make_store`` fixture's body: it closes every store it made after the test."""
    made: list[JobStore] = []

    def make(owner: Owner | None = None) -> JobStore:
        made.append(new(owner))
        return made[-1]

    yield make
    for store in made:
        store.close()


class JobStoreContract:
    """Subclass it as ``Test...`` with a ``make_store`` fixture:
    ``make_store(owner=None)`` gives another store object on the same data."""

    @pytest.fixture
    def store(self, make_store: MakeStore) -> JobStore:
        return make_store()

    def test_create_then_every_change_bumps_version(self, store: JobStore) -> None:
        job = store.create("sleep", "nap", {"seconds": 1})
        assert (job.status, job.version, job.progress, job.started_at, job.result) == (
            Status.PENDING,
            1,
            0.0,
            None,
            None,
        )
        assert store.get(job.id) == job
        claimed = store.claim(["sleep"])
        assert claimed is not None and claimed.id == job.id
        assert (claimed.status, claimed.version) == (Status.IN_PROGRESS, 2) and claimed.started_at is not None
        moved = store.progress(job.id, 0.5, "half")
        assert moved is not None and (moved.progress, moved.message, moved.version) == (0.5, "half", 3)
        done = store.finish(job.id, Status.COMPLETED, result={"ok": [1]}, progress=1.0)
        assert done is not None and (done.status, done.result, done.version) == (Status.COMPLETED, {"ok": [1]}, 4)
        assert done.message == "half" and done.finished_at is not None and done.error is None
        assert done.updated_at >= done.created_at
        assert store.get("missing") is None

    def test_writes_are_conditional_on_status_and_owner(self, make_store: MakeStore) -> None:
        mine, other = make_store(), make_store(Owner("elsewhere", 1, "1", "x"))
        job = mine.create("sleep", "nap", {})
        with pytest.raises(InvalidTransition):
            mine.finish(job.id, Status.PENDING)
        assert mine.finish(job.id, Status.COMPLETED) is None  # not in progress: nothing written
        assert mine.get(job.id) == job
        assert mine.claim(["sleep"]) is not None
        assert other.progress(job.id, 0.3, None) is None  # not its job
        assert other.finish(job.id, Status.COMPLETED) is None
        assert mine.get(job.id).version == 2  # type: ignore[union-attr]

    def test_cancel_pending_at_once_running_by_flag_terminal_refused(self, store: JobStore) -> None:
        pending = store.create("sleep", "a", {})
        cancelled = store.request_cancel(pending.id)
        assert (cancelled.status, cancelled.version) == (Status.CANCELLED, 2) and cancelled.finished_at
        assert store.claim(["sleep"]) is None  # it left the queue
        running = store.create("sleep", "b", {})
        assert store.claim(["sleep"]) is not None
        flagged = store.request_cancel(running.id)
        assert flagged.status is Status.IN_PROGRESS and flagged.version == 2
        assert store.cancel_requested([running.id, pending.id]) == {running.id}
        with pytest.raises(InvalidTransition):
            store.request_cancel(pending.id)
        with pytest.raises(JobNotFound):
            store.request_cancel("nope")

    def test_claim_takes_the_oldest_of_known_types_only(self, store: JobStore) -> None:
        a = store.create("other", "a", {})
        b = store.create("sleep", "b", {})
        c = store.create("fail", "c", {})
        d = store.create("sleep", "d", {})
        assert store.claim([]) is None
        claimed = [store.claim(["sleep", "fail"]), store.claim(["fail", "sleep"]), store.claim(["sleep"])]
        assert [j.id if j else None for j in claimed] == [b.id, c.id, d.id]
        assert store.claim(["sleep", "fail"]) is None
        assert store.get(a.id).status is Status.PENDING  # type: ignore[union-attr]

    def test_pages_newest_first_with_opaque_cursor_and_status(self, store: JobStore) -> None:
        ids = [store.create("sleep", str(i), {}).id for i in range(7)]
        store.request_cancel(ids[1])
        seen, cursor = [], None
        while True:
            page = store.page(limit=3, cursor=cursor)
            seen += [j.id for j in page.jobs]
            cursor = page.next_cursor
            if cursor is None:
                break
            assert "seq" not in cursor and not cursor.isdigit()
        assert seen == ids[::-1]
        assert [j.id for j in store.page(Status.CANCELLED).jobs] == [ids[1]]
        for bad in ("garbage", "!!", "ajE6eA"):  # the last decodes to "j1:x"
            with pytest.raises(InvalidCursor):
                store.page(cursor=bad)

    def test_newest_selects_everything_by_id_and_by_prefix(self, store: JobStore) -> None:
        jobs = [store.create("sleep", str(i), {}) for i in range(5)]
        assert [j.id for j in store.newest(Selection(everything=True), 3)] == [j.id for j in jobs[:1:-1]]
        assert [j.id for j in store.newest(Selection(ids=[jobs[1].id, "zz"]))] == [jobs[1].id]
        target = jobs[3].id
        found = store.newest(Selection(id_prefixes=[target[:6]]))
        assert target in [j.id for j in found] and all(j.id.startswith(target[:6]) for j in found)
        assert store.newest(Selection()) == []

    def test_owners_are_kept_and_each_viewer_pages_only_what_it_sees(self, store: JobStore) -> None:
        made = [
            store.create("sleep", str(i), {}, owner) for i, owner in enumerate(["a", "b", "-", "a", "b", "-", "a", "b"])
        ]
        owner_of = {job.id: job.owner for job in made}
        assert [job.owner for job in made[:3]] == ["a", "b", "-"] and store.get(made[0].id).owner == "a"  # type: ignore[union-attr]
        unowned = store.create("sleep", "nobody's", {})
        assert unowned.owner is None and unowned.to_json()["owner"] is None
        store.request_cancel(made[3].id)  # a's, cancelled

        def pages(viewer: Viewer, status: Status | None = None) -> list[str]:
            seen, cursor = [], None
            while True:
                page = store.page(status, limit=2, cursor=cursor, viewer=viewer)
                seen += [j.id for j in page.jobs]
                if (cursor := page.next_cursor) is None:
                    return seen

        newest_first = [j.id for j in [*made, unowned][::-1]]
        for viewer in (EVERYONE, Viewer(everything=False, sub="a"), Viewer(everything=False, sub=None)):
            expected = [i for i in newest_first if owner_of.get(i) in (None, viewer.sub) or viewer.everything]
            assert pages(viewer) == expected
            assert [j.id for j in store.newest(Selection(everything=True), viewer=viewer)] == expected
            picked = store.newest(Selection(ids=[made[0].id, made[1].id, unowned.id]), viewer=viewer)
            assert [j.id for j in picked] == [i for i in expected if i in (made[0].id, made[1].id, unowned.id)]
        assert pages(Viewer(everything=False, sub="a"), Status.CANCELLED) == [made[3].id]
        assert pages(Viewer(everything=False, sub="b"), Status.CANCELLED) == []
        withdrawn = store.create("sleep", "gone", {}, "a")
        assert store.withdraw(withdrawn.id)
        assert withdrawn.id not in pages(Viewer(everything=False, sub="a"))

    def test_counts_follow_every_status_change_and_withdraw(self, store: JobStore) -> None:
        a, b, c = (store.create("sleep", n, {}) for n in "abc")
        store.claim(["sleep"])
        store.request_cancel(b.id)
        store.finish(a.id, Status.ERROR, error="boom")
        assert store.counts() == {
            "total": 3,
            "pending": 1,
            "in_progress": 0,
            "completed": 0,
            "cancelled": 1,
            "error": 1,
        }
        assert store.withdraw(c.id) and not store.withdraw(a.id)
        assert store.get(c.id) is None
        assert store.counts()["total"] == 2 and store.counts()["pending"] == 0

    @pytest.mark.timeout(60)
    def test_concurrent_claims_from_many_store_objects_never_share_a_job(self, make_store: MakeStore) -> None:
        creator = make_store()
        ids = {creator.create("sleep", str(i), {}).id for i in range(200)}
        claimers = [make_store(Owner("host", 100 + i, "1", f"t{i}")) for i in range(4)]
        taken = claim_concurrently(claimers, ["sleep"])
        assert Counter(job_id for batch in taken for job_id in batch) == Counter(ids)  # each once
        assert creator.counts()["in_progress"] == 200

    def test_recovery_interrupts_only_jobs_of_dead_runners(self, make_store: MakeStore) -> None:
        here = Owner.current()
        dead = make_store(Owner(here.host, 999_999_999, "1", "dead"))  # same host, no such pid
        alive = make_store()  # this process
        far = make_store(Owner("other-host", 5, "1", "far"))  # another host, fresh heartbeat
        fresh = make_store()
        for s in (dead, alive, far):
            s.heartbeat()
            s.create("sleep", "j", {})
            assert s.claim(["sleep"]) is not None
        recovered = fresh.recover_interrupted()
        assert [(j.status, j.error) for j in recovered] == [(Status.ERROR, "interrupted")]
        assert recovered[0].finished_at is not None
        assert fresh.counts()["in_progress"] == 2
        assert fresh.recover_interrupted() == []
        released = alive.release()
        assert [j.error for j in released] == ["interrupted"] and fresh.counts()["in_progress"] == 1
