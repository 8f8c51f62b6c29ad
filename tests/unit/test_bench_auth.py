"""The bench's tokens are ones the server accepts, for the bench's topics."""

from __future__ import annotations

from pathlib import Path

from bench.auth import BenchAuth
from bench.report import table
from server.settings import Settings
from server.tokens import TokenVerifier


def test_bench_tokens_read_and_publish_the_bench_topics(tmp_path: Path) -> None:
    auth = BenchAuth.random()
    settings = Settings.from_env(auth.env())
    assert settings.stream_auth == "required"
    verifier = TokenVerifier.from_settings(settings)
    assert verifier is not None
    stream_file, publish_file = auth.write_tokens(tmp_path, 3)
    grants = [verifier.verify(t) for t in stream_file.read_text().split()]
    assert [g.sub for g in grants] == ["bench-0", "bench-1", "bench-2"]
    assert all(g.may_subscribe("bench0a1b2c3d") and not g.may_publish("bench0a1b2c3d") for g in grants)
    assert verifier.verify(publish_file.read_text().strip()).may_publish("bench0a1b2c3d")


def test_the_auth_variant_is_read_against_plain_jobstream() -> None:
    med = {("jobstream", "fanout-1000x10"): {"p99_ms": 20.0}, ("jobstream-auth", "fanout-1000x10"): {"p99_ms": 22.0}}
    lines = table(med, ["jobstream", "jobstream-auth"], ["fanout-1000x10"]).splitlines()
    assert lines[0].endswith("| jobstream-auth/jobstream |")
    assert "| p99 ms | 20 | 22 | 1.10 |" in lines[3]
