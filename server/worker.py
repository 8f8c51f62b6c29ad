"""``JobstreamWorker``: gunicorn's gevent worker with the app's front door (``server.front``).

gunicorn imports this module in its master, before gevent patches anything,
as it imports its own gevent worker: it imports nothing else at import time.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.workers.ggevent import GeventWorker


class JobstreamWorker(GeventWorker):  # type: ignore[misc]
    """Each accepted connection is offered to the front first, then to gunicorn."""

    front: Any = None

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.front = self._make_front()

    def _make_front(self) -> Any:
        from server import front

        routes = (getattr(self.wsgi, "extensions", None) or {}).get(front.EXTENSION)
        if not routes:
            return None
        paths, upgrades = routes
        why = front.allowed(self.cfg, os.environ.get("SCRIPT_NAME", ""))
        if why is not None:
            self.log.info("front door off: %s is set", why)
            return None
        from gunicorn.http.message import _ip_in_allow_list
        from gunicorn.http.wsgi import base_environ

        cfg = self.cfg
        base = base_environ(cfg)
        base["wsgi.multithread"] = True  # as gunicorn's async workers set it
        networks = cfg.forwarded_allow_networks()
        return front.Front(
            self.wsgi,
            paths,
            base,
            dict(cfg.secure_scheme_headers),
            lambda ip: bool(_ip_in_allow_list(ip, cfg.forwarded_allow_ips, networks)),
            self._count_request,
            upgrades,
        )

    def _count_request(self) -> None:
        # What gunicorn's handle_request does per request: max_requests restarts.
        self.nr += 1
        alive: bool = self.alive  # type: ignore[has-type]
        if self.nr >= self.max_requests and alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        front = self.front
        if front is not None:
            client.setblocking(1)
            if front.serve(listener, client, addr):
                return
        super().handle(listener, client, addr)
