"""Medians over rounds, ratios to the peers, and the printed table."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

# metric -> (label, +1 if higher is better / -1 if lower is better)
METRICS: dict[str, tuple[str, int]] = {
    "connect_rate": ("connects/s", 1),
    "connect_failures": ("connect failures", -1),
    "rss_per_stream": ("RSS bytes/stream", -1),
    "p50_ms": ("p50 ms", -1),
    "p99_ms": ("p99 ms", -1),
    "max_ms": ("max ms", -1),
    "deliveries_per_s": ("deliveries/s", 1),
    "publish_per_s": ("publishes/s", 1),
    "lost": ("lost", -1),
    "duplicates": ("duplicates", -1),
    "out_of_order": ("out of order (by id)", -1),
    "health_p99_ms": ("/health p99 ms", -1),
    "health_max_ms": ("/health max ms", -1),
    "p99_base_ms": ("p99 ms, no slow clients", -1),
    "p99_ratio": ("p99 with / without slow", -1),
    "stream_ends": ("streams ended by server", -1),
    "publish_p99_ms": ("publish p99 ms", -1),
    "lost_all": ("lost incl. stalled", -1),
    "clients_missing": ("clients missing events", -1),
    "reconnects": ("reconnects", 0),
    "reset_events": ("reset events (declared gaps)", -1),
    "rss_growth_mb": ("RSS growth MB", -1),
    "storm_seconds": ("seconds to all reconnected", -1),
    "reconnect_failures": ("reconnect failures", -1),
    "reconnect_5xx": ("reconnects answered 5xx", -1),
    "max_active": ("most streams open at once", 0),
    "limit": ("instance limit", 0),
    "active_after": ("streams open after", 0),
    "connect_cpu_us_mean": ("CPU µs per reconnect, mean of workers", -1),
    "connect_cpu_us_max": ("CPU µs per reconnect, busiest worker", -1),
    "delivery_cpu_us_mean": ("CPU µs per delivery, mean of workers", -1),
    "delivery_cpu_us_max": ("CPU µs per delivery, busiest worker", -1),
    "server_cpu_pct": ("server CPU %", 0),
    "loadgen_cpu_pct": ("loadgen CPU %", 0),
}

SHOWN: dict[str, list[str]] = {
    "connect": [
        "connect_rate",
        "connect_failures",
        "rss_per_stream",
        "server_cpu_pct",
        "loadgen_cpu_pct",
    ],
    "fanout": [
        "p50_ms",
        "p99_ms",
        "max_ms",
        "deliveries_per_s",
        "lost",
        "duplicates",
        "out_of_order",
        "stream_ends",
        "reset_events",
        "health_p99_ms",
        "server_cpu_pct",
        "loadgen_cpu_pct",
    ],
    "throughput": [
        "deliveries_per_s",
        "publish_per_s",
        "p99_ms",
        "lost",
        "reset_events",
        "server_cpu_pct",
        "loadgen_cpu_pct",
    ],
    "storm": [
        "storm_seconds",
        "stream_ends",
        "reconnects",
        "reconnect_failures",
        "reconnect_5xx",
        "max_active",
        "limit",
        "active_after",
        "connect_cpu_us_mean",
        "connect_cpu_us_max",
        "delivery_cpu_us_mean",
        "delivery_cpu_us_max",
        "deliveries_per_s",
        "lost",
        "duplicates",
        "p99_ms",
    ],
    "health-under-load": ["health_p99_ms", "health_max_ms", "p99_ms", "lost"],
    "slow-clients-base": ["p99_ms", "lost"],
    "slow-clients": ["p99_base_ms", "p99_ms", "p99_ratio", "lost", "stream_ends"],
    "overload": [
        "publish_p99_ms",
        "p99_ms",
        "lost_all",
        "clients_missing",
        "stream_ends",
        "reconnects",
        "rss_growth_mb",
    ],
}

PEERS = ("sse-starlette", "nchan")
# A variant of Jobstream -> the target it is read against, in its own column.
VARIANTS = {
    "jobstream-auth": "jobstream",
    "jobstream-ws": "jobstream",
    "jobstream-auth-ws": "jobstream-auth",
    "jobstream-redis-ws": "jobstream-redis",
    "jobstream-2w-ws": "jobstream-2w",
    "jobstream-redis-fleet": "jobstream-redis",
}


def shown(scenario: str) -> list[str]:
    for prefix, keys in SHOWN.items():
        if scenario.startswith(prefix):
            return keys
    return ["p99_ms", "lost"]


def medians(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(target, scenario) -> {metric: median over rounds, 'rounds': k}."""
    acc: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    errors: dict[tuple[str, str], str] = {}
    for rec in records:
        key = (rec["target"], rec["scenario"])
        if "error" in rec:
            errors[key] = rec["error"].splitlines()[0][:80]
            continue
        for k, v in rec["metrics"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                acc[key][k].append(float(v))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for key, metrics in acc.items():
        out[key] = {k: statistics.median(vs) for k, vs in metrics.items()}
        out[key]["rounds"] = max(len(vs) for vs in metrics.values())
    for key, err in errors.items():
        out.setdefault(key, {"error": err})
    # slow-clients is judged against slow-clients-base (same load, no slow
    # clients), each run on a fresh server.
    for (target, sc), m in out.items():
        base = out.get((target, "slow-clients-base"), {})
        if sc == "slow-clients" and "p99_ms" in m and "p99_ms" in base:
            m["p99_base_ms"] = base["p99_ms"]
            m["p99_ratio"] = m["p99_ms"] / max(base["p99_ms"], 1e-3)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v[:14]
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10 or v == int(v):
        return f"{v:.0f}" if v == int(v) else f"{v:.1f}"
    return f"{v:.2f}"


def table(med: dict[tuple[str, str], dict[str, Any]], targets: list[str], scenarios: list[str]) -> str:
    """A Markdown table: one row per (scenario, metric), ratios to peers."""
    ours = sorted((t for t in targets if t not in PEERS), key=lambda t: t in VARIANTS)  # a base first
    peers = [t for t in targets if t in PEERS]
    ratio_cols = [(o, p) for o in ours[:1] for p in peers]
    ratio_cols += [(v, base) for v, base in VARIANTS.items() if v in targets and base in targets]
    head = ["scenario", "metric", *targets, *[f"{o}/{p}" for o, p in ratio_cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in scenarios:
        for metric in shown(sc):
            label, _better = METRICS[metric]
            cells = []
            for t in targets:
                m = med.get((t, sc), {})
                cells.append(_fmt(m.get(metric, m.get("error"))))
            ratios = []
            for o, p in ratio_cols:
                a, b = (
                    med.get((o, sc), {}).get(metric),
                    med.get((p, sc), {}).get(metric),
                )
                ok = isinstance(a, float) and isinstance(b, float) and b != 0
                ratios.append(f"{a / b:.2f}" if ok else "-")  # type: ignore[operator]
            lines.append("| " + " | ".join([sc, label, *cells, *ratios]) + " |")
    return "\n".join(lines)
