"""Operator endpoints under ``/admin/`` (token-guarded by ``server.auth``).

``GET /admin/clients`` lists the open streams: with Redis those of every
worker of every host (``"scope": "fleet"``, each worker's entries as of its
last refresh, docs/scale-out.md), else the answering worker's (``"local"``).
Every entry names its ``host`` and ``worker_pid``; ``?host=`` keeps one
host's. What is listed comes from the object that ``init_app`` was given;
this package knows nothing of how streams work.
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
    """What the admin endpoints read: one dict per open stream, and the scope
    the listing covers (``"fleet"`` or ``"local"``)."""

    def client_listing(self, host: str | None = None) -> tuple[Iterable[dict[str, Any]], str]: ...


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
    host = request.args.get("host")
    if host is not None and not host.strip():
        fail(400, "host must name a host (an INSTANCE_NAME), got an empty value")
    listed, scope = source.client_listing(host)
    infos = list(listed)
    infos.sort(key=lambda info: info[key], reverse=descending)
    body = {"clients": infos, "worker_pid": os.getpid(), "count": len(infos), "at": time.time(), "scope": scope}
    return jsonify(body)
