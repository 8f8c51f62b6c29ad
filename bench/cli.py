"""Command line: python -m bench [--quick] [--rounds N] [--targets ...]."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import loadgen, report, scenarios, suite
from bench.procs import raise_nofile

ROOT = Path(__file__).resolve().parent.parent
JOBSTREAM_TARGETS = ["jobstream", "jobstream-auth", "jobstream-redis", "jobstream-redis-fleet", "jobstream-2w"]
# Each Jobstream target over /ws too: "jobstream-ws" is "jobstream" with WebSockets.
ALL_TARGETS = [
    *(t + suffix for t in JOBSTREAM_TARGETS for suffix in ("", "-ws")),
    "sse-starlette",
    "nchan",
    "floor",
    "ceiling",
]
TRANSPORTS = ("sse", "ws")
# Run unless --targets names them: the Redis targets answer one question (do
# workers scale on Redis?) and need a redis-server; jobstream-redis-fleet, what
# fleet-wide limits cost (read against jobstream-redis); jobstream-auth, another
# (what does a JWT on every stream cost?); floor, gunicorn's own cost
# (bench/floor_app.py); ceiling, gevent's with no HTTP at all
# (bench/ceiling_worker.py, the connect scenario only).
DEFAULT_TARGETS = ["jobstream", "jobstream-2w", "sse-starlette", "nchan"]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller, shorter scenarios")
    p.add_argument("--rounds", type=int, default=3, help="rounds per scenario (median)")
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma list from {ALL_TARGETS}",
    )
    p.add_argument(
        "--transport",
        default="sse",
        help="sse, ws or sse,ws: the Jobstream targets' streams over SSE, over /ws, or both "
        "(each scenario then runs on jobstream and jobstream-ws back to back; peers are SSE only)",
    )
    p.add_argument("--scenarios", default="", help="comma list of scenario names (default all)")
    p.add_argument("--app-dir", type=Path, default=ROOT, help="where Jobstream's app.py is")
    p.add_argument("--out", type=Path, default=None, help="JSON-lines results file")
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="only print the table of a results file",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report is not None:
        print(reprint(args.report))
        return 0
    raise_nofile()
    loadgen.build()
    chosen = (scenarios.quick if args.quick else scenarios.full)()
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        chosen = [s for s in chosen if s.name in wanted]
    targets = over_transports([t for t in args.targets.split(",") if t], args.transport)
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        raise SystemExit(f"unknown targets: {sorted(unknown)}")
    out_path = args.out or ROOT / "bench" / "results" / time.strftime("run-%Y%m%d-%H%M%S.jsonl")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    with open(out_path, "w") as out:
        out.write(
            json.dumps(
                {
                    "meta": {
                        "argv": vars(args),
                        "targets": targets,
                        "scenarios": [s.name for s in chosen],
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    }
                },
                default=str,
            )
            + "\n"
        )
        records.extend(suite.rounds(targets, chosen, args.rounds, args.app_dir, out))
        med = report.medians(records)
        out.writelines(
            json.dumps({"summary": True, "target": target, "scenario": sc, **m}) + "\n"
            for (target, sc), m in sorted(med.items())
        )
    ran = [t for t in targets if any(r["target"] == t and "error" not in r for r in records)]
    print(report.table(med, ran or targets, [s.name for s in chosen]))
    print(f"\nresults: {out_path}")
    return 0


def over_transports(targets: list[str], transport: str) -> list[str]:
    """The targets to run for --transport: "ws" turns each Jobstream target
    into its -ws twin, "sse,ws" puts the twin right after it; peers speak SSE
    and are kept only when sse is asked for."""
    wanted = [t for t in transport.split(",") if t]
    if not wanted or set(wanted) - set(TRANSPORTS):
        raise SystemExit(f"--transport must be sse, ws or sse,ws; got {transport!r}")
    out: list[str] = []
    for t in targets:
        if t not in JOBSTREAM_TARGETS:
            if "sse" in wanted or t.endswith("-ws"):
                out.append(t)
            continue
        out.extend(t if w == "sse" else t + "-ws" for w in wanted)
    return list(dict.fromkeys(out))


def reprint(path: Path) -> str:
    """The table of an earlier run's JSON-lines file."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = [r for r in records if "round" in r]
    targets = [t for t in ALL_TARGETS if any(r["target"] == t and "error" not in r for r in records)]
    names = list(dict.fromkeys(r["scenario"] for r in records))
    return report.table(report.medians(records), targets, names)
