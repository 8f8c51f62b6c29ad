"""The live job board: ``GET /`` serves one HTML page; the rest is static.

The page and ``static/jobstream.js`` talk to the same public API as any other
client (``/stream``, ``/jobs``); nothing here reads jobs or streams. The
Content-Security-Policy allows scripts and styles from this origin only, so
even a rendering bug cannot turn a job name into running script.

May import: Flask and the standard library only.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, render_template

bp = Blueprint("board", __name__)

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


@bp.get("/")
def index() -> Response:
    response = Response(render_template("board.html"), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
