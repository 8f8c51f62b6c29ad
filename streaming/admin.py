"""Operator endpoints under ``/admin/`` (token-guarded by ``streaming.auth``).

``GET /admin/clients`` lists the open streams of the worker that answers:
with several workers each has its own registry, so a listing covers one
worker until a shared broker aggregates them (see README, "Deployment").
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from streaming.http import fail
from streaming.service import StreamingService

bp = Blueprint("admin", __name__, url_prefix="/admin")

# sort= value -> (info key, descending). Lag first: "who is behind".
SORTS = {"lag": ("lag_seconds", True), "connected_at": ("connected_at", False)}


@bp.get("/clients")
def clients() -> Response:
    svc: StreamingService = current_app.extensions["jobstream"]
    sort = request.args.get("sort", "connected_at")
    if sort not in SORTS:
        fail(400, f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    key, descending = SORTS[sort]
    now = svc.clock()
    infos: list[dict[str, Any]] = [c.info(now) for c in svc.registry.clients()]
    infos.sort(key=lambda info: info[key], reverse=descending)
    return jsonify({"clients": infos, "worker_pid": os.getpid(), "count": len(infos), "at": time.time()})
