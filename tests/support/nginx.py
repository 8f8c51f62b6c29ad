"""A real nginx running deploy/nginx.conf through deploy/run_nginx.py, as docs/deployment.md says."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.server import ROOT, refuse_in_unit_tests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NginxProcess:
    def __init__(self, prefix: Path, upstream_port: int, extra: list[str] | None = None) -> None:
        self.prefix = prefix
        self.upstream_port = upstream_port
        self.extra = extra or []
        self.http_port = free_port()
        self.https_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None

    @property
    def cert(self) -> Path:
        return self.prefix / "tls" / "cert.pem"

    def command(self) -> list[str]:
        return [
            sys.executable, "deploy/run_nginx.py", "--prefix", str(self.prefix),
            "--http-port", str(self.http_port), "--https-port", str(self.https_port),
            "--upstream", f"127.0.0.1:{self.upstream_port}", "--self-signed", *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> NginxProcess:
        refuse_in_unit_tests("nginx")
        self.prefix.mkdir(parents=True, exist_ok=True)
        self._out = open(self.prefix / "run.log", "ab")
        self.proc = subprocess.Popen(self.command(), cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:
                for port in (self.http_port, self.https_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        parts = [self.prefix / "run.log", self.prefix / "logs" / "error.log"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def url(self, path: str = "/", tls: bool = False) -> str:
        return f"https://127.0.0.1:{self.https_port}{path}" if tls else f"http://127.0.0.1:{self.http_port}{path}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._out is not None:
            self._out.close()
            self._out = None
