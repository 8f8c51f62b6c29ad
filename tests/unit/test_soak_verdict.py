"""bench.soak's verdict: RSS after warm-up within the tolerance of its first sample."""

from __future__ import annotations

from typing import Any

from bench.soak import verdict

MB = 2**20


def samples(*rss_mb: float, pid: int = 7) -> list[dict[str, Any]]:
    return [{"t": 10.0 * i, "worker_rss": int(mb * MB), "worker_pid": pid} for i, mb in enumerate(rss_mb)]


def test_warm_up_growth_is_ignored_and_a_flat_tail_passes() -> None:
    result = verdict(samples(50, 70, 75, 75.5, 76, 75.2), warmup=20, tolerance=0.10)
    assert result["flat"] is True
    assert result["base_mb"] == 75


def test_growth_past_the_tolerance_after_warm_up_fails() -> None:
    result = verdict(samples(70, 72.5, 73, 85.8, 83.4), warmup=10, tolerance=0.10)
    assert result["flat"] is False
    assert round(result["max_drift_pct"]) == 18


def test_a_replaced_worker_is_not_flat() -> None:
    rows = [*samples(70, 70), {"t": 20.0, "worker_rss": 70 * MB, "worker_pid": 8}]
    assert verdict(rows, warmup=0, tolerance=0.10)["flat"] is False
