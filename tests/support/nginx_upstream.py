"""A real nginx in front of several gunicorn instances, for the scale-out tests.

It runs in the foreground (``daemon off``) with everything under the test's
directory. ``X-Upstream`` tells a test which instance answered.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.redis import free_port
from tests.support.server import refuse_in_unit_tests

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """\
worker_processes 1;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{site}
    server {{
        listen 127.0.0.1:{port};
        add_header X-Upstream $upstream_addr always;
        include {root}/locations.conf;
    }}
}}
"""


def available() -> bool:
    return Path(NGINX).exists()


def readme_blocks(readme: Path, ports: list[int]) -> tuple[str, str]:
    """The scale-out nginx example in docs/scale-out.md (upstream, locations), pointed at ``ports``.

    The test runs what the docs show: only the ``server`` addresses of
    the upstream change.
    """
    blocks = re.findall(r"```nginx\n(.*?)```", readme.read_text(), flags=re.S)
    upstream = next(b for b in blocks if b.lstrip().startswith("upstream jobstream"))
    locations = next(b for b in blocks if b.lstrip().startswith("location"))
    servers = iter(ports)
    upstream = re.sub(r"server \S+:\d+", lambda _: f"server 127.0.0.1:{next(servers)}", upstream)
    return upstream, locations


class NginxProcess:
    def __init__(self, workdir: Path, upstream: str, locations: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (workdir / "locations.conf").write_text(locations)
        (workdir / "nginx.conf").write_text(CONF.format(root=workdir, port=self.port, site=upstream))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> NginxProcess:
        refuse_in_unit_tests("nginx")
        cmd = [NGINX, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf"), "-g", "daemon off;"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()}")
            try:
                httpx.get(self.url("/health"), timeout=2)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not answer within {timeout}s: {self.error_log()}")

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # fast shutdown; open streams are cut
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
