"""docs/openapi.json: it matches the routes, is served, and the live server honours it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from server.openapi import load
from server.settings import Settings
from tests.conftest import StartServer
from tests.support.server import ServerProcess

METHODS = {"get", "post", "put", "patch", "delete"}
# Run the schemathesis CLI from this interpreter (its console script may not be on PATH).
SCHEMATHESIS = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]


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


def test_the_served_spec_is_the_file(shared_server: ServerProcess) -> None:
    response = shared_server.http.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == load()
    assert load()["openapi"].startswith("3.")


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_response_off_spec(start_server: StartServer, tmp_path: Path) -> None:
    # With a token set, so the auth checks (401 without it) run too. /stream
    # never ends, so it is left out; tests/test_stream.py covers its responses.
    server = start_server({"API_TOKEN": "fuzz-token"})
    command = [
        *SCHEMATHESIS, "--config-file", str(Path(__file__).parents[1] / "integration" / "schemathesis.toml"),
        "run", server.url("/openapi.json"),
        "--exclude-path", "/stream",
        "--header", "Authorization: Bearer fuzz-token",
        "--checks", "all",
        "--max-examples", "25",
        "--seed", "20261128",
        "--request-timeout", "5",
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "No issues found" in proc.stdout
    assert "Traceback" not in server.log()
