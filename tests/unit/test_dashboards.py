"""Every PromQL query that ships (alert rules, the Grafana dashboard) names metrics the app exports.

The names come from a real in-process ``/metrics`` scrape after a stream, a
publish, a job and a canary, so renaming a metric (or dropping one) fails here
before an operator finds an empty panel or an alert that can never fire.
"""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs (types-PyYAML does)
from flask import Flask

import streaming
from streaming.core.client import Client
from streaming.core.topics import TopicFilter
from streaming.core.writer import StreamWriter
from tests.support.apps import app_in

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "jobstream.json"
METRIC = re.compile(r"\bjobstream_[a-z0-9_]+\b")


def alert_queries() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_queries() -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found[f"{where}/{key}"] = value
                else:
                    walk(value, f"{where}/{node.get('title', key)}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")

    walk(json.loads(DASHBOARD.read_text()), "")
    return found


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    yield from app_in(tmp_path, canary_seconds=3600.0)


def exported(app: Flask) -> set[str]:
    """Metric names in a scrape after some of everything."""
    client = app.test_client()
    assert client.get("/health").status_code == 200
    svc = streaming.service_of(app)
    writer = StreamWriter(queue.Queue(maxsize=50), last_write=time.monotonic())
    svc.registry.admit(Client(writer, remote_addr="10.0.0.1", user_agent="t", topics=TopicFilter(["*"])))
    assert client.post("/events", json={"topic": "news", "data": "x"}).status_code == 202
    assert client.post("/jobs", json={"type": "sleep", "params": {"seconds": 0}}).status_code in (201, 202)
    svc.canary.tick(time.monotonic())
    text = client.get("/metrics").get_data(as_text=True)
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_query_names_an_exported_metric(app: Flask) -> None:
    names = exported(app)
    queries = {**{f"alert {k}": v for k, v in alert_queries().items()}, **dashboard_queries()}
    assert len(queries) > 20
    unknown = {where: sorted(set(METRIC.findall(q)) - names) for where, q in queries.items()}
    assert {where: missing for where, missing in unknown.items() if missing} == {}
    assert all(METRIC.search(q) for q in queries.values()), "a query that names no metric"


def test_the_dashboard_shows_every_metric_the_alerts_use() -> None:
    in_alerts = {m for q in alert_queries().values() for m in METRIC.findall(q)}
    in_dashboard = {m for q in dashboard_queries().values() for m in METRIC.findall(q)}
    assert in_alerts - in_dashboard == set()


def test_a_renamed_metric_would_be_caught(app: Flask) -> None:
    names = exported(app)
    assert "jobstream_canary_delivery_seconds_bucket" in names
    assert "jobstream_canary_missed_total" in names
    assert "jobstream_connections_max" in names and "jobstream_broker_up" in names
    assert "jobstream_canary_delivery_seconds_renamed_bucket" not in names
