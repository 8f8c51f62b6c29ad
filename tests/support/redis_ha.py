"""Real Redis replication, Sentinel and Cluster on ephemeral loopback ports.

``SentinelGroup``: a primary, its replicas and one sentinel (quorum 1, short
``down-after-milliseconds``), each a ``redis-server`` process (the sentinel is
``redis-server <conf> --sentinel``, what the ``redis-sentinel`` command
runs). ``ClusterGroup``: three primaries joined by ``redis-cli --cluster
create``. Every wait polls ``INFO``, ``SENTINEL`` or ``CLUSTER INFO`` against a
deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import redis

from tests.support.redis import REDIS_SERVER, free_port
from tests.support.server import refuse_in_unit_tests

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
MASTER = "jobstream"
DOWN_AFTER_MS = 800

T = TypeVar("T")


def available() -> bool:
    return Path(REDIS_SERVER).exists() and Path(REDIS_CLI).exists()


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05) -> T:
    """``check()``'s first true value; Redis errors meanwhile count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except redis.RedisError as exc:
            last, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last error: {last})")


class Node:
    """One ``redis-server`` process with a config file (Sentinel rewrites configs)."""

    def __init__(self, workdir: Path, lines: list[str], sentinel: bool = False) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.lines = lines
        self.sentinel = sentinel
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "redis.log"

    def start(self, timeout: float = 10.0) -> Node:
        refuse_in_unit_tests("redis-server")
        for _ in range(5):  # another process may take the free port first
            self.port = self.port or free_port()
            conf = self.workdir / "redis.conf"
            base = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.workdir}", f"logfile {self.log_path}"]
            if not self.sentinel:
                # No 5 s wait for more replicas before a full sync (the diskless default).
                base += ['save ""', "appendonly no", "repl-diskless-sync-delay 0"]
            conf.write_text("\n".join(base + self.lines) + "\n")
            cmd = [REDIS_SERVER, str(conf)] + (["--sentinel"] if self.sentinel else [])
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(f"redis on {self.port}", lambda: self.proc is not None and self._ping(), timeout)
                return self
            except AssertionError:
                self.kill()
                self.port = 0
        raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text(errors='replace')[-2000:]}")

    def _ping(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited")
        with self.client() as client:
            return bool(client.ping())

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True, **kw)

    def info(self, section: str = "replication") -> dict[str, Any]:
        with self.client() as client:
            info: dict[str, Any] = client.info(section)
            return info

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def kill(self) -> None:
        """SIGKILL: what a crashed host looks like (no goodbye to anyone)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


class SentinelGroup:
    """A primary, ``replicas`` replicas and one sentinel watching them as ``MASTER``."""

    def __init__(self, workdir: Path, replicas: int = 1) -> None:
        self.workdir = workdir
        self.replica_count = replicas
        self.nodes: list[Node] = []
        self.sentinel: Node | None = None

    def start(self) -> SentinelGroup:
        primary = Node(self.workdir / "node0", []).start()
        self.nodes.append(primary)
        for i in range(self.replica_count):
            replica = Node(self.workdir / f"node{i + 1}", [f"replicaof 127.0.0.1 {primary.port}"]).start()
            self.nodes.append(replica)
        self.wait_replicas(primary, self.replica_count)
        self.sentinel = Node(
            self.workdir / "sentinel",
            [
                f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 1",
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {MASTER} 10000",
                f"sentinel parallel-syncs {MASTER} {max(1, self.replica_count)}",
            ],
            sentinel=True,
        ).start()
        wait_until(
            "the sentinel sees the replicas",
            lambda: len(self.sentinel_client().sentinel_slaves(MASTER)) >= self.replica_count,
        )
        return self

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{MASTER}"

    def sentinel_client(self) -> redis.Redis:
        assert self.sentinel is not None
        return self.sentinel.client()

    def master_address(self) -> tuple[str, int]:
        with self.sentinel_client() as client:
            host, port = client.sentinel_get_master_addr_by_name(MASTER)
        return (str(host), int(port))

    def node_at(self, address: tuple[str, int]) -> Node:
        return next(node for node in self.nodes if node.address == address)

    @property
    def primary(self) -> Node:
        return self.node_at(self.master_address())

    def replicas(self) -> list[Node]:
        primary = self.master_address()
        return [node for node in self.nodes if node.proc is not None and node.address != primary]

    @staticmethod
    def wait_replicas(primary: Node, count: int, timeout: float = 15.0) -> None:
        """Until ``primary`` is a primary with ``count`` replicas online and in sync."""

        def ready() -> bool:
            info = primary.info()
            if info.get("role") != "master":
                return False
            online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            offset = info.get("master_repl_offset", 0)
            return sum(1 for r in online if r.get("state") == "online" and r.get("offset", -1) >= 0) >= count and (
                offset >= 0
            )

        wait_until(f"{count} replicas online on {primary.port}", ready, timeout)

    def wait_failover(self, old: tuple[str, int], replicas: int, timeout: float = 20.0) -> Node:
        """The new primary, once the sentinel names one other than ``old`` and it has ``replicas`` replicas."""

        def moved() -> tuple[str, int] | None:
            address = self.master_address()
            return address if address != old else None

        node = self.node_at(wait_until("the sentinel names a new primary", moved, timeout))
        self.wait_replicas(node, replicas, timeout)
        return node

    def failover(self, timeout: float = 10.0) -> None:
        """``SENTINEL FAILOVER``, once the sentinel has a replica it may promote
        (NOGOODSLAVE until it has linked to one and read its INFO)."""

        def started() -> bool:
            with self.sentinel_client() as client:
                try:
                    return bool(client.execute_command("SENTINEL", "FAILOVER", MASTER))
                except redis.ResponseError as exc:
                    if "NOGOODSLAVE" in str(exc):
                        return False
                    raise

        wait_until("SENTINEL FAILOVER accepted", started, timeout)

    def stop(self) -> None:
        for node in [*([self.sentinel] if self.sentinel else []), *self.nodes]:
            node.stop()


class ClusterGroup:
    """Three primaries (no replicas) forming one Redis Cluster over every slot."""

    def __init__(self, workdir: Path, primaries: int = 3) -> None:
        self.workdir = workdir
        self.count = primaries
        self.nodes: list[Node] = []

    def start(self) -> ClusterGroup:
        for i in range(self.count):
            node = Node(
                self.workdir / f"node{i}",
                ["cluster-enabled yes", f"cluster-config-file {self.workdir / f'node{i}' / 'nodes.conf'}",
                 "cluster-node-timeout 2000"],
            )  # fmt: skip
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for node in self.nodes:
            wait_until(f"cluster ok on {node.port}", partial(_cluster_ok, node))
        return self

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def node_of(self, key: str) -> Node:
        with self.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, (_host, port, *_), *_replicas in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(node for node in self.nodes if node.port == int(port))
        raise AssertionError(f"no node serves the slot of {key}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(node: Node) -> bool:
    with node.client() as client:
        info = client.execute_command("CLUSTER", "INFO")
    text = info if isinstance(info, str) else str(info)
    return "cluster_state:ok" in text
