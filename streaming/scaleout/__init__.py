"""Several workers and hosts: the Redis Stream broker, and the table that
the workers of one gunicorn master share for limits and totals.

May import: ``streaming.core``, ``server``, the standard library and redis.
``instance`` is standard library only (plus ``streaming.core.reasons``):
``gunicorn.conf.py`` creates the table in the unpatched master.
"""
