"""What one fault scenario did to delivery, counted by event id; and where it is written.

Set ``JOBSTREAM_FAULTS_REPORT=<file>`` and every scenario appends one JSON
line to it (docs/reliability.md's table is made from such a file).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.support.fault_clients import Publisher, ResumingReader

REPORT_ENV = "JOBSTREAM_FAULTS_REPORT"


@dataclass
class Tally:
    scenario: str
    mechanism: str
    streams: int
    published: int  # acknowledged with 202
    refused: int  # any other answer, or none
    delivered: int  # (stream, acknowledged id) pairs received at least once
    expected: int  # published * streams
    lost: int  # acknowledged ids missing from at least one stream
    duplicated: int  # deliveries of an id a stream already had
    unacknowledged_delivered: int  # ids a stream got that no 202 confirmed
    reconnects: int
    resets: int
    recover_s: float | None  # fault end -> every stream has received an event again (the slowest stream)

    def line(self) -> str:
        return json.dumps({**asdict(self), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def tally(
    scenario: str, mechanism: str, publisher: Publisher, readers: list[ResumingReader], fault_end: float
) -> Tally:
    acked = set(publisher.acked)
    missing: set[str] = set()
    duplicated = 0
    delivered = 0
    extra: set[str] = set()
    for reader in readers:
        counts = Counter(reader.ids)
        duplicated += sum(n - 1 for n in counts.values())
        got = set(counts)
        delivered += len(got & acked)
        missing |= acked - got
        extra |= got - acked
    recover: float | None = None
    firsts = [min((at for at in r.arrived.values() if at >= fault_end), default=None) for r in readers]
    if readers and all(at is not None for at in firsts):
        recover = max(at for at in firsts if at is not None) - fault_end
    return Tally(
        scenario=scenario,
        mechanism=mechanism,
        streams=len(readers),
        published=len(acked),
        refused=sum(publisher.refused.values()),
        delivered=delivered,
        expected=len(acked) * len(readers),
        lost=len(missing),
        duplicated=duplicated,
        unacknowledged_delivered=len(extra),
        reconnects=sum(max(0, r.connects - 1) for r in readers),
        resets=sum(r.resets for r in readers),
        recover_s=None if recover is None else round(recover, 3),
    )


def record(result: Tally) -> None:
    """Append the scenario's line to $JOBSTREAM_FAULTS_REPORT, if set."""
    path = os.environ.get(REPORT_ENV)
    if path:
        with Path(path).open("a") as out:
            out.write(result.line() + "\n")


def wait_delivered(readers: list[ResumingReader], publisher: Publisher, timeout: float) -> bool:
    """Until every stream has every acknowledged id (True), or the timeout (False)."""
    deadline = time.monotonic() + timeout
    acked = set(publisher.acked)
    while time.monotonic() < deadline:
        if all(acked <= r.arrived.keys() for r in readers):
            return True
        time.sleep(0.05)
    return False
