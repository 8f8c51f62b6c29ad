"""``GET /openapi.json``: the API description kept in ``docs/openapi.json``.

The file is the source of truth, edited by hand next to the routes;
tests/unit/test_openapi.py fails when a route and the file disagree;
tests/integration/test_openapi_server.py fuzzes
the live server against it with schemathesis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

SPEC_PATH = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"

bp = Blueprint("openapi", __name__)


def load(path: Path = SPEC_PATH) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return spec


def init_app(app: Flask) -> None:
    # Read at start-up: a broken file stops the worker instead of a scrape.
    app.extensions["jobstream.openapi"] = load()
    app.register_blueprint(bp)


@bp.get("/openapi.json")
def spec() -> Response:
    return jsonify(current_app.extensions["jobstream.openapi"])
