from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import redis as redis_support
from tests.support.redis import RedisServer
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
        server.discard()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One default server for tests that only read and publish."""
    server = ServerProcess(tmp_path_factory.mktemp("shared"))
    server.start()
    yield server
    server.discard()


StartRedis = Callable[..., RedisServer]


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start real ``redis-server`` processes on ephemeral ports; skipped only without the binary."""
    if not redis_support.available():
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    started: list[RedisServer] = []

    def start(appendonly: bool = False, name: str = "redis") -> RedisServer:
        server = RedisServer(tmp_path / f"{name}{len(started)}", appendonly=appendonly)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(start_redis: StartRedis) -> RedisServer:
    return start_redis()


# Fixtures that start real servers (tests/integration/conftest.py adds
# ``browser``). Tests under tests/integration are marked ``integration`` by
# their directory; one elsewhere that uses such a fixture, directly or through
# another fixture, would start a server in the fast unit run.
SERVER_FIXTURES = frozenset({"start_server", "shared_server", "start_redis", "redis_server", "browser"})


@pytest.hookimpl(trylast=True)  # after tests/integration/conftest.py has marked its tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = [
        item.nodeid
        for item in items
        if item.get_closest_marker("integration") is None
        and SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    ]
    if misplaced:
        raise pytest.UsageError(
            "these tests start servers but are not under tests/integration/: " + ", ".join(misplaced)
        )
