"""One worker's streaming service and how it is run: the service (registry,
broker, cleanup, shutdown), its observers, the cleanup daemon, Prometheus
metrics and the gunicorn hooks.

May import: ``streaming.core``, ``streaming.scaleout``, ``server``, Flask and
prometheus_client. Not ``streaming.transport``.
"""
