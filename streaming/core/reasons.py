"""Why a stream ended, and why one was refused.

The values are part of the contract: they are the ``reason`` of the
``stream closed`` / ``stream rejected`` log lines, the label values of
``jobstream_connections_closed`` and ``jobstream_connections_rejected``, and
the ``reason`` field of a refusal's JSON. Standard library only: the
instance table imports this in the unpatched gunicorn master.
"""

from __future__ import annotations

from enum import StrEnum


class CloseReason(StrEnum):
    CLIENT = "client"  # the peer hung up, or a write failed
    EVICTED = "evicted"  # its buffer stayed full past STREAM_SEND_TIMEOUT
    STALE = "stale"  # no successful write for 2 x keep-alive + send timeout
    SHUTDOWN = "shutdown"  # the worker is stopping (SIGTERM, SIGINT)
    UNAVAILABLE = "unavailable"  # replay or the snapshot needed the broker, which is down
    TOKEN_EXPIRED = "token_expired"  # the stream's JWT reached its exp (found by the cleanup tick)


class RefusalReason(StrEnum):
    CAPACITY = "capacity"  # STREAM_MAX_CONNECTIONS reached
    PER_IP = "per_ip"  # STREAM_MAX_CONNECTIONS_PER_IP reached
    DRAINING = "draining"  # the worker is shutting down


# The reasons a stream ends at the server's initiative because its peer is
# not keeping up; these get a WARNING log line and a socket shutdown.
NOT_KEEPING_UP = frozenset({CloseReason.EVICTED, CloseReason.STALE})
