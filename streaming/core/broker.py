"""Where published events go: ids, history and fan-out behind one interface.

The streaming code only sees ``Broker``. ``MemoryBroker`` is the embedded
default (one process, history in SQLite); ``RedisBroker``
(``streaming.scaleout.redis_broker``) stands in its place for several workers
and hosts.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from server.sqlite import Busy
from streaming.core.events import PUBLIC, Delivery, Event
from streaming.core.history import History, Reader, SqliteHistory
from streaming.core.ids import IdGenerator, Key, format_id
from streaming.core.registry import Registry
from streaming.core.topics import TopicFilter, is_internal

# The id of every event on an internal topic (the canary): it takes no id
# from the sequence and is never written to a stream, so none is needed.
INTERNAL_ID = "0-0"


class BrokerUnavailable(Exception):
    """The broker cannot accept events right now (e.g. Redis is down)."""


class Broker(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def publish(self, topic: str, event: str, data: str, delivery: Delivery = PUBLIC) -> Event:
        """Assign an id, record in history, deliver to local clients. Thread-safe.

        An internal topic (``streaming.core.topics.is_internal``) is delivered
        to the registry's internal listeners only and kept out of the history."""
        ...

    def attach_peers(self, peers: Any) -> None:
        """Other workers of this host whose delivery a publish waits for
        (``streaming.scaleout.instance.DeliveryCursors``); ignored in-process."""
        ...

    def replay(self, after: Key, topics: TopicFilter, may_read: Reader | None = None) -> list[Event]:
        """Events after ``after`` matching ``topics``, private ones only where
        ``may_read`` allows (``History.after``'s rules); raises ``ReplayGap``,
        or ``BrokerUnavailable`` when the history cannot be read right now."""
        ...

    @property
    def last_key(self) -> Key | None: ...

    @property
    def healthy(self) -> bool: ...


class MemoryBroker:
    """In-process fan-out: publish assigns the id and fans out synchronously.

    One lock orders id assignment, history and fan-out, so every client
    sees events in id order. Nothing under it waits for a client: the SQLite
    insert is a short local write, and the fan-out only queues with
    ``put_nowait`` or makes one non-blocking send (yielding every 64 sends,
    with the lock held so the order stays).
    """

    def __init__(self, registry: Registry, history_size: int, store: SqliteHistory | None = None) -> None:
        self.registry = registry
        self._store = store
        self._lock = threading.Lock()
        if store is not None:
            self.history = store.load()
            self._ids = IdGenerator(last=store.last_issued())
        else:
            self.history = History(history_size)
            self._ids = IdGenerator()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self._store is not None:
            self._store.close()

    def attach_peers(self, peers: Any) -> None:
        pass  # one process: nobody else to wait for

    def publish(self, topic: str, event: str, data: str, delivery: Delivery = PUBLIC) -> Event:
        if is_internal(topic):
            # Same lock and fan-out as any event (what the canary times), but
            # no id from the sequence and no history: replay never sees it.
            with self._lock:
                ev = Event.create(INTERNAL_ID, topic, event, data, delivery)
                self.registry.fanout(ev)
            return ev
        with self._lock:
            ev = Event.create(format_id(self._ids.next()), topic, event, data, delivery)
            if self._store is not None:
                try:
                    self._store.append(ev)
                except Busy as exc:  # another process holds the file's lock: not accepted
                    raise BrokerUnavailable(f"event history: {exc}") from None
            self.history.append(ev)
            self.registry.fanout(ev)
        return ev

    def replay(self, after: Key, topics: TopicFilter, may_read: Reader | None = None) -> list[Event]:
        return self.history.after(after, topics, may_read)

    @property
    def last_key(self) -> Key | None:
        last = self._ids.last
        return None if last == (0, 0) else last

    @property
    def healthy(self) -> bool:
        return True
