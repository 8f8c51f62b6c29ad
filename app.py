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
from server import auth, cors, headers, logs, openapi, readers, tokens
from server.errors import MAX_BODY_BYTES, install_body_limit, install_error_handlers
from server.proxies import TrustedProxies
from server.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env(os.environ)
    logs.configure(settings.log_level)
    Path(settings.jobs_db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # CORS first: a preflight must be answered before the token guard sees it.
    cors.init_app(app, settings.allowed_origins)
    install_body_limit(app)
    verifier = tokens.init_app(app, settings)
    auth.init_app(app, settings.api_token, verifier, settings.jwt_cookie)
    readers.init_app(app, settings, verifier)
    streaming.init_app(app, streaming.StreamingService(settings, verifier=verifier))
    board.init_app(app)
    jobs.init_app(app, streaming.service_of(app))
    openapi.init_app(app)
    install_error_handlers(app)
    headers.init_app(app)
    if settings.trusted_proxies:
        # Trust exactly that many hops of X-Forwarded-For/-Proto, and only
        # from FORWARDED_ALLOW_IPS peers (server/proxies.py). Outermost, so
        # the stream fast path sees the client's address too.
        app.wsgi_app = TrustedProxies(  # type: ignore[method-assign]
            app.wsgi_app, settings.trusted_proxies, settings.forwarded_allow_ips
        )
    return app


app = create_app()
