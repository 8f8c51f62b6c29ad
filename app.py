"""Jobstream: live job updates over Server-Sent Events.

``gunicorn -c gunicorn.conf.py app:app`` imports this module inside each
worker after gevent has patched. Building the app reads the settings and
prepares the registry; threads start later, in ``post_worker_init``.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

import board
import jobs
import streaming
from streaming import auth, cors, logs, metrics, openapi
from streaming.fastpath import StreamFastPath
from streaming.http import MAX_BODY_BYTES, install_body_limit, install_error_handlers
from streaming.service import StreamingService
from streaming.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env(os.environ)
    logs.configure(settings.log_level)
    Path(settings.jobs_db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    service = StreamingService(settings)
    app.extensions["jobstream"] = service
    streaming.use(service)
    app.wsgi_app = StreamFastPath(app.wsgi_app, service)  # type: ignore[method-assign]
    if settings.trusted_proxies:
        # Trust exactly that many hops of X-Forwarded-For/-Proto (nginx appends
        # the peer address, so the right-most n entries are the ones proxies
        # wrote); Host and prefix are never taken from headers.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0, x_port=0, x_prefix=0)  # type: ignore[method-assign]
    app.json.sort_keys = False  # type: ignore[attr-defined]

    from streaming.admin import bp as admin_bp
    from streaming.views import bp as streaming_bp

    # CORS first: a preflight must be answered before the token guard sees it.
    cors.init_app(app, settings.allowed_origins)
    install_body_limit(app)
    auth.init_app(app, settings.api_token)
    app.register_blueprint(streaming_bp)
    board.init_app(app)
    jobs.init_app(app, service)
    app.register_blueprint(admin_bp)
    metrics.init_app(app, service)
    openapi.init_app(app)
    install_error_handlers(app)
    return app


app = create_app()
