"""docs/openapi.json: it matches the routes.

That it is served, and that the live server honours it, is in
``tests/integration/test_openapi_server.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

from app import create_app
from server.openapi import load
from server.settings import Settings

METHODS = {"get", "post", "put", "patch", "delete"}


def flask_routes(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(jobs_db=str(tmp_path / "jobs.db")))
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            routes.add((method.lower(), path))
    return routes


def spec_routes() -> set[tuple[str, str]]:
    return {(method, path) for path, item in load()["paths"].items() for method in item if method in METHODS}


def test_every_route_is_in_the_spec_and_nothing_else(tmp_path: Path) -> None:
    routes, documented = flask_routes(tmp_path), spec_routes()
    assert routes - documented == set(), "routes missing from docs/openapi.json"
    assert documented - routes == set(), "docs/openapi.json describes routes that do not exist"
