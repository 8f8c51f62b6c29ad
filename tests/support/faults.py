"""Network faults for tests/faults: network namespaces, veth links, iptables, a delay proxy.

What each fault is made of (this kernel has no ``sch_netem``; see docs/reliability.md):

- a **link** is a veth pair between the test's network namespace and a new
  one (``ip netns add``), a /30 of 10.213.0.0/16 on it; traffic between the
  two ends crosses the veth, never loopback;
- **loss** is ``iptables -m statistic --mode random --probability p -j DROP``
  on the namespace's end of the veth, both directions: real dropped
  segments that TCP retransmits;
- a **cut** (partition) is ``iptables -j DROP`` for everything on that end:
  no RST, no ICMP, connections hang as across a dead switch; ``heal`` removes
  the rules and the same connections may carry on;
- **latency** is :class:`DelayProxy`, a userspace TCP relay that holds every
  chunk it reads for ``delay`` seconds before writing it on, each direction.

Everything is undone when the context manager exits (or, after a crash, by
the next run: namespaces named ``jsfault-<pid>-*`` of a dead pid are
removed). Rules live inside the namespace, so deleting it deletes them; the
host's own iptables tables are never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.server import refuse_in_unit_tests
from tests.support.sse import SSEClient

PREFIX = "jsfault"
_CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)
_libc = ctypes.CDLL(None, use_errno=True)


def _run(*cmd: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip() or res.returncode}")


def _remove_stale() -> None:
    """Namespaces a crashed earlier run left (its pid is gone)."""
    for path in Path("/run/netns").glob(f"{PREFIX}-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", path.name], capture_output=True, check=False)


_missing: list[str | None] = []


def missing_capability() -> str | None:
    """Why this machine cannot make the faults (None: it can). Probed once, for real."""
    if _missing:
        return _missing[0]
    reason: str | None = None
    if shutil.which("ip") is None:
        reason = "`ip` (iproute2) is not installed (.ci/run installs it)"
    elif shutil.which("iptables") is None:
        reason = "`iptables` is not installed (.ci/run installs it)"
    elif os.geteuid() != 0:
        reason = "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    else:
        try:
            with Netns() as ns:
                link = ns.link()
                link.lose(0.05)
                link.cut()
                link.heal()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            reason = f"cannot build a netns + veth + iptables link here: {exc}"
    _missing.append(reason)
    return reason


@dataclass
class Link:
    """One veth pair: ``host_ip`` in the test's namespace, ``ns_ip`` in ``ns``."""

    ns: Netns
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    _rules: list[list[str]] = field(default_factory=list)

    def _add(self, *rule: str) -> None:
        self.ns.iptables("-I", *rule)
        self._rules.append(list(rule))

    def lose(self, probability: float) -> None:
        """Drop that share of packets, at random, each way."""
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            stat = ["-m", "statistic", "--mode", "random", "--probability", f"{probability}"]
            self._add(chain, flag, self.ns_if, *stat, "-j", "DROP")

    def cut(self) -> None:
        """Drop every packet, each way (no RST, no ICMP)."""
        for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self._add(chain, flag, self.ns_if, "-j", "DROP")

    def heal(self) -> None:
        """Remove every rule this link added."""
        while self._rules:
            self.ns.iptables("-D", *self._rules.pop())


class Netns:
    """A network namespace, its links and its processes; all gone on exit."""

    def __init__(self) -> None:
        refuse_in_unit_tests("a network namespace")
        self.name = f"{PREFIX}-{os.getpid()}-{next(_counter)}"
        self.links: list[Link] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Netns:
        _remove_stale()
        _run("ip", "netns", "add", self.name)
        try:
            _run("ip", "-n", self.name, "link", "set", "lo", "up")
        except RuntimeError:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def link(self) -> Link:
        """A new veth pair with its own /30; up at both ends."""
        used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=False).stdout
        for _ in range(16384):
            n = next(_counter) + os.getpid() * 7
            base = 4 * (n % 16384)
            host_ip = f"10.213.{base // 256}.{base % 256 + 1}"
            if f" {host_ip}/" not in used:
                break
        ns_ip = host_ip.rsplit(".", 1)[0] + f".{int(host_ip.rsplit('.', 1)[1]) + 1}"
        tag = f"{os.getpid() % 100000}{len(self.links)}{next(_counter) % 100}"
        host_if, ns_if = f"jfh{tag}"[:15], f"jfn{tag}"[:15]
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", self.name)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", self.name, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _run("ip", "-n", self.name, "link", "set", ns_if, "up")
        link = Link(self, host_if, ns_if, host_ip, ns_ip)
        self.links.append(link)
        return link

    def iptables(self, *args: str) -> None:
        _run("ip", "netns", "exec", self.name, "iptables", "-w", *args)

    def popen(self, cmd: list[str], **kw: object) -> subprocess.Popen[bytes]:
        """Run cmd inside the namespace (``ip netns exec`` execs it: same pid)."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in the namespace: sockets made here belong to it for good."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if _libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into " + self.name)
            try:
                yield
            finally:
                if _libc.setns(own, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the test's namespace")
        finally:
            os.close(own)
            os.close(target)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for link in self.links:
            subprocess.run(["ip", "link", "del", link.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


class RedisInNetns:
    """``redis-server`` inside a namespace, on 0.0.0.0:6379 there (its own port space)."""

    def __init__(self, ns: Netns, workdir: Path) -> None:
        self.ns = ns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, link: Link) -> str:
        return f"redis://{link.ns_ip}:6379/0"

    def start(self, link: Link, timeout: float = 10.0) -> RedisInNetns:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        cmd = [
            redis_server, "--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.proc = self.ns.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((link.ns_ip, 6379), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server in the namespace did not answer PING")


class DelayProxy:
    """A TCP relay adding ``delay`` seconds each way; ``cut_all`` resets every connection.

    Threads only (two per direction per connection): the tests run a few
    streams through it, not thousands.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.server = socket.create_server(listen)
        self.address: tuple[str, int] = self.server.getsockname()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="delay-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self.server.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                down.close()
                continue
            for sock in (down, up):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            with self._lock:
                self._conns += [down, up]
            self._pipe(down, up)
            self._pipe(up, down)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """src -> (held for delay) -> dst, order kept."""
        due: list[tuple[float, bytes]] = []
        ready = threading.Condition()

        def read() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                with ready:
                    due.append((time.monotonic() + self.delay, data))
                    ready.notify()
                if not data:
                    return

        def write() -> None:
            while True:
                with ready:
                    ready.wait_for(lambda: bool(due))
                    at, data = due.pop(0)
                time.sleep(max(0.0, at - time.monotonic()))
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def cut_all(self) -> int:
        """Reset every relayed connection (both sides); returns how many there were."""
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(conns) // 2

    def close(self) -> None:
        self._closed = True
        self.server.close()
        self.cut_all()


@dataclass
class RemoteSSEClient(SSEClient):
    """SSEClient to any host, optionally from inside a namespace."""

    host: str = "127.0.0.1"
    netns: Netns | None = None

    def connect(self, recv_buffer: int | None = None) -> SSEClient:
        if self.netns is not None:
            with self.netns.entered():
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
            query = "&".join(f"{k}={v}" for k, v in self.params)
            lines = [f"GET {self.path}?{query} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: text/event-stream"]
            lines += [f"{k}: {v}" for k, v in self.headers.items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError:
            sock.close()
            raise
        self.sock = sock
        return self


class ResumingReader(threading.Thread):
    """An EventSource in a thread: reads one stream, reconnects with Last-Event-ID.

    ``ids`` is every id received for ``event``, in arrival order, repeats
    included; ``arrived[id]`` when it first came. Reconnects after
    ``retry_delay`` (a browser would honour the server's ``retry:``; the
    tests keep the wait short and fixed).
    """

    def __init__(self, make: Callable[[dict[str, str]], SSEClient], event: str, retry_delay: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.make = make
        self.event = event
        self.retry_delay = retry_delay
        self.ids: list[str] = []
        self.arrived: dict[str, float] = {}
        self.last_id: str | None = None
        self.connects = 0
        self.failed_connects = 0
        self.resets = 0
        self.statuses: list[int] = []
        self._halt = threading.Event()
        self._client: SSEClient | None = None

    def run(self) -> None:
        while not self._halt.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            client = self.make(headers)
            try:
                client.open()
            except (OSError, ConnectionError, ValueError):
                client.close()
                self.failed_connects += 1
                self._halt.wait(self.retry_delay)
                continue
            self.statuses.append(client.status)
            if client.status != 200:
                client.close()
                self._halt.wait(self.retry_delay)
                continue
            self.connects += 1
            self._client = client
            seen = 0
            try:
                while not self._halt.is_set():
                    alive = client.pump(0.2)
                    for event in client.events[seen:]:
                        self._take(event.event, event.id)
                    seen = len(client.events)
                    if not alive:
                        break
            except (OSError, ValueError):
                pass  # reset, or cut mid-chunk: reconnect
            finally:
                client.close()
                self._client = None
            self._halt.wait(self.retry_delay)

    def _take(self, name: str, event_id: str | None) -> None:
        if name == "reset":
            self.resets += 1
        if event_id is not None:
            self.last_id = event_id
        if name == self.event and event_id is not None:
            self.ids.append(event_id)
            self.arrived.setdefault(event_id, time.monotonic())

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(5)


class Publisher(threading.Thread):
    """POSTs ``event`` on ``topic`` at ``rate`` a second; keeps every acknowledged id.

    ``acked`` maps id -> when the 202 came; anything else (a 503, a reset, a
    timeout) is counted in ``refused`` by status (0: no answer).
    """

    def __init__(self, base_url: str, topic: str, event: str, rate: float, timeout: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.topic = topic
        self.event = event
        self.rate = rate
        self.timeout = timeout
        self.acked: dict[str, float] = {}
        self.refused: dict[int, int] = {}
        self.attempts = 0
        self._halt = threading.Event()

    def run(self) -> None:
        http = httpx.Client(base_url=self.base_url, timeout=self.timeout)
        start = time.monotonic()
        try:
            while not self._halt.is_set():
                self.attempts += 1
                body = {"topic": self.topic, "event": self.event, "data": {"n": self.attempts}}
                try:
                    response = http.post("/events", json=body)
                    if response.status_code == 202:
                        self.acked[response.json()["id"]] = time.monotonic()
                    else:
                        self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1
                except httpx.HTTPError:
                    self.refused[0] = self.refused.get(0, 0) + 1
                    http.close()
                    http = httpx.Client(base_url=self.base_url, timeout=self.timeout)
                self._halt.wait(max(0.0, start + self.attempts / self.rate - time.monotonic()))
        finally:
            http.close()

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:
            self.join(self.timeout + 5)

    def acked_after(self, moment: float) -> list[str]:
        return [i for i, at in self.acked.items() if at >= moment]
