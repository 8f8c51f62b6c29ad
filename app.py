"""Jobstream: live job updates over Server-Sent Events.

``gunicorn -c gunicorn.conf.py app:app`` imports this module inside each
worker after gevent has patched. Building the app reads the settings and
prepares the registry; threads start later, in ``post_worker_init``.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

import board
import jobs
import streaming
from streaming import logs
from streaming.http import MAX_BODY_BYTES, install_error_handlers
from streaming.service import StreamingService
from streaming.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env(os.environ)
    logs.configure(settings.log_level)
    Path(settings.jobs_db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]

    service = StreamingService(settings)
    app.extensions["jobstream"] = service
    streaming.use(service)

    from streaming.views import bp as streaming_bp

    app.register_blueprint(streaming_bp)
    board.init_app(app)
    jobs.init_app(app, service)
    install_error_handlers(app)
    return app


app = create_app()
