"""Process helpers: free ports, fd limits, RSS and CPU of a process tree."""

from __future__ import annotations

import json
import os
import resource
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

NOFILE = 200_000
_TICK = os.sysconf("SC_CLK_TCK")


def raise_nofile(want: int = NOFILE) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (root may lift the hard cap)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants that are alive now."""
    seen: list[int] = []
    todo = [pid]
    while todo and len(seen) < 1000:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def rss_bytes(pid: int) -> int:
    """Summed VmRSS of the process tree rooted at pid (master + workers)."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by the live process tree."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total / _TICK


def wait_http_ok(url: str, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
    """Poll url until it answers 200, the deadline passes, or alive() is False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError) as exc:
            last = exc  # not listening yet: poll again
            del last
        time.sleep(0.1)
    return False


def http_json(url: str, timeout: float = 5.0) -> dict[str, object]:
    """GET url and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data = json.loads(resp.read())
    return data if isinstance(data, dict) else {"value": data}
