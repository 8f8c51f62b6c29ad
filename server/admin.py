"""Operator endpoints under ``/admin/`` (token-guarded by ``server.auth``).

``GET /admin/clients`` lists the open streams of the worker that answers:
with several workers each has its own registry, so a listing covers one
worker (see docs/deployment.md). What is listed comes from the object that
``init_app`` was given; this package knows nothing of how streams work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any, Protocol

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from server.errors import fail

bp = Blueprint("admin", __name__, url_prefix="/admin")

# sort= value -> (info key, descending). Lag first: "who is behind".
SORTS = {"lag": ("lag_seconds", True), "connected_at": ("connected_at", False)}
EXTENSION = "jobstream.admin"


class StreamSource(Protocol):
    """What the admin endpoints read: one dict per open stream."""

    def client_infos(self) -> Iterable[dict[str, Any]]: ...


def init_app(app: Flask, source: StreamSource) -> None:
    app.extensions[EXTENSION] = source
    app.register_blueprint(bp)


@bp.get("/clients")
def clients() -> Response:
    source: StreamSource = current_app.extensions[EXTENSION]
    sort = request.args.get("sort", "connected_at")
    if sort not in SORTS:
        fail(400, f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    key, descending = SORTS[sort]
    infos = list(source.client_infos())
    infos.sort(key=lambda info: info[key], reverse=descending)
    return jsonify({"clients": infos, "worker_pid": os.getpid(), "count": len(infos), "at": time.time()})
