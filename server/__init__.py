"""What every part of the app shares: settings, logs, JSON errors, the token
guard, CORS, the OpenAPI document, the admin blueprint and the background
thread helper.

May import: the standard library, Flask, Werkzeug, python-json-logger and
(``tokens`` only) PyJWT. Never ``jobs`` or ``board``, and of ``streaming``
only ``streaming.core.topics``, the pure pattern grammar a token's grant is
written in (they build on this package). ``settings``, ``parsers``, ``logs``
and ``background`` are standard library only: ``gunicorn.conf.py`` imports
the first three in the unpatched master.
"""
