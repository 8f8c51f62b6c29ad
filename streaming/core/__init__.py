"""The wire format and the model: events and their encoding, ids, topic
filters, history, the broker interface with the in-process broker, the
client registry, each stream's writer, and why streams end.

May import: the standard library and ``server``. No Flask, no Redis; the
only sockets touched are a stream's own, in ``writer``.
"""
