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
- **latency** is ``tests.support.delay_proxy.DelayProxy``, a userspace TCP relay that holds every
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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import refuse_in_unit_tests

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

    def dropped(self) -> int:
        """Packets this link's rules have dropped so far (iptables' counters)."""
        total = 0
        for chain in ("INPUT", "OUTPUT"):
            out = subprocess.run(
                ["ip", "netns", "exec", self.ns.name, "iptables", "-w", "-nvx", "-L", chain],
                capture_output=True, text=True, check=True, timeout=10,
            ).stdout  # fmt: skip
            for line in out.splitlines():
                fields = line.split()
                if "DROP" in fields and self.ns_if in fields and fields[0].isdigit():
                    total += int(fields[0])
        return total

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
