"""What every part of the app shares: settings, logs, JSON errors, the token
guard, CORS, the OpenAPI document, the admin blueprint and the background
thread helper.

May import: the standard library, Flask, Werkzeug and python-json-logger.
Never ``streaming``, ``jobs`` or ``board`` (they build on this package).
``settings``, ``logs`` and ``background`` are standard library only:
``gunicorn.conf.py`` imports the first two in the unpatched master.
"""
