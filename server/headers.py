"""Headers every JSON response carries: ``nosniff`` and ``no-store``.

``X-Content-Type-Options: nosniff`` stops a browser from reading a JSON body
(which may echo client text, such as a refused topic) as HTML or script;
``Cache-Control: no-store`` keeps job lists, admin listings and errors out
of shared and browser caches. One ``after_request`` hook, so error handlers'
responses get them too. ``text/event-stream`` is left alone: streams keep
``Cache-Control: no-cache`` (the fast path writes its own head and never
reaches Flask). The board, static files and ``/metrics`` are not JSON and
keep Flask's defaults.
"""

from __future__ import annotations

from flask import Flask, Response

from server.errors import is_json

JSON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def init_app(app: Flask) -> None:
    @app.after_request
    def _json_headers(response: Response) -> Response:
        if is_json(response.mimetype or ""):
            response.headers.update(JSON_HEADERS)
        return response
