from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start real gunicorn servers; all are stopped (SIGKILL if stuck) after the test."""
    started: list[ServerProcess] = []

    def start(
        env: dict[str, str] | None = None, args: list[str] | None = None, name: str = "server", **kw: object
    ) -> ServerProcess:
        server = ServerProcess(tmp_path / f"{name}{len(started)}", env=env, args=args)
        started.append(server)
        return server.start(**kw)  # type: ignore[arg-type]

    yield start
    for server in started:
        server.stop(timeout=10)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default server for tests that only read and publish."""
    server = ServerProcess(tmp_path_factory.mktemp("shared"))
    server.start()
    yield server
    server.stop(timeout=10)
