"""HTTP: the ``/stream`` generator, the routes (``/stream``, ``/events``,
``/health``), building a client from a request, the fast path in front of
Flask and the hang-up watch.

May import everything else in ``streaming``, ``server`` and Flask.
"""
