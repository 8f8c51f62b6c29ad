"""The instance table: limits and totals shared by the workers of one master."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from streaming.core.client import Client
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter
from streaming.scaleout.instance import (
    CAPACITY,
    PER_IP,
    DeliveryCursors,
    InstanceAdmission,
    InstanceTable,
    TableFull,
    pack_id,
)


@pytest.fixture
def table() -> Iterator[InstanceTable]:
    shared = InstanceTable.create(rows=8)
    yield shared
    shared.close()


class Worker:
    """A forked "worker": claims a row like post_worker_init, admits, then stays
    alive (holding its streams) until ``exit``."""

    def __init__(self, table: InstanceTable, tries: int, limit: int) -> None:
        result_r, result_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(result_r)
                row = table.claim(os.getpid())
                got = sum(table.try_admit(row, f"10.0.0.{i % 7}", limit, 0) is None for i in range(tries))
                os.write(result_w, str(got).encode())
                os.close(result_w)
                signal.pause()  # until killed, like a worker that crashes
            finally:
                os._exit(0)
        os.close(result_w)
        with os.fdopen(result_r) as pipe:
            self.got = int(pipe.read())

    def exit(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def test_the_limit_holds_across_processes_exactly(table: InstanceTable) -> None:
    workers = [Worker(table, 20, limit=30) for _ in range(3)]
    try:
        assert [w.got for w in workers] == [20, 10, 0]
        totals = table.totals()
        assert totals["active"] == 30 and totals["workers"] == 3
    finally:
        for w in workers:
            w.exit()


def test_a_dead_workers_row_is_released_and_its_streams_stop_counting(table: InstanceTable) -> None:
    worker = Worker(table, 10, limit=10)
    mine = table.claim(os.getpid())
    assert table.try_admit(mine, "10.9.9.9", 10, 0) == CAPACITY
    worker.exit()  # died with its streams counted; the master's child_exit:
    assert table.release_pid(worker.pid)
    assert table.totals()["active"] == 0 and table.totals()["workers"] == 1
    assert table.try_admit(mine, "10.9.9.9", 10, 0) is None


def test_rows_of_vanished_processes_are_reclaimed(table: InstanceTable) -> None:
    for _ in range(table.rows):
        Worker(table, 1, limit=100).exit()  # each claims a row, exits without child_exit
    assert table.claim(os.getpid()) in range(table.rows)
    assert table.totals()["workers"] == 1
    with pytest.raises(TableFull):
        full = InstanceTable.create(rows=1)
        try:
            full.claim(os.getpid())
            full.claim(os.getppid())  # alive, so not reclaimable
        finally:
            full.close()


def test_per_ip_counts_are_instance_wide_and_released(table: InstanceTable) -> None:
    a, b = table.claim(os.getpid()), table.claim(os.getppid())
    assert table.try_admit(a, "10.0.0.1", 100, 2) is None
    assert table.try_admit(b, "10.0.0.1", 100, 2) is None
    assert table.try_admit(a, "10.0.0.1", 100, 2) == PER_IP
    assert table.try_admit(b, "10.0.0.2", 100, 2) is None
    assert table.ip_count("10.0.0.1") == 2
    table.release(b, "10.0.0.1")
    assert table.try_admit(a, "10.0.0.1", 100, 2) is None


def test_registry_reports_instance_totals_through_its_admission(table: InstanceTable) -> None:
    other = table.claim(os.getppid())  # another worker with one open stream
    assert table.try_admit(other, "10.0.0.5", 3, 0) is None
    table.publish(other, {"accepted": 1, "total_messages": 40})
    mine = table.claim(os.getpid())
    registry = Registry(
        max_connections=3,
        send_timeout_seconds=5,
        keepalive_seconds=5,
        admission=InstanceAdmission(table, mine, max_connections=3, max_per_ip=0),
    )
    clients = [Client.create(0, "10.0.0.6", "t", TopicFilter()) for _ in range(3)]
    assert [registry.admit(c) for c in clients] == [None, None, CAPACITY]
    stats = registry.stats()
    assert stats["active_connections"] == 3
    assert stats["accepted"] == 3 and stats["rejected"] == 1
    assert stats["total_messages"] == 40 and stats["workers"] == 2
    registry.remove(clients[0])
    assert registry.stats()["active_connections"] == 2


def test_delivery_cursors_find_the_slowest_reading_worker(table: InstanceTable) -> None:
    assert pack_id(1700000000000, 5) < pack_id(1700000000000, 6) < pack_id(1700000000001, 0)
    fast = DeliveryCursors(table, table.claim(os.getpid()))
    slow = DeliveryCursors(table, table.claim(os.getppid()))
    assert fast.all_past(1, 0)  # nobody has read anything: nobody to wait for
    fast.report(1700000000000, 9)
    slow.report(1700000000000, 3)
    assert slow.all_past(1700000000000, 3) and not fast.all_past(1700000000000, 4)
    slow.clear()  # a worker that stopped reading is not waited for
    assert fast.all_past(1700000000000, 9) and not fast.all_past(1700000000000, 10)
    slow.report(1700000000000, 2)
    table.release_pid(os.getppid())  # nor is one that exited
    assert fast.all_past(1700000000000, 9)
