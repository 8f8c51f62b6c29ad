"""Run deploy/nginx.conf with other ports, upstream and certificates, in a private prefix.

    python deploy/run_nginx.py --prefix /tmp/jobstream-nginx --http-port 18080 \\
        --https-port 18443 --upstream 127.0.0.1:8000 --self-signed

writes ``<prefix>/nginx.conf`` (the shipped file with only the listed values
replaced; pid, logs and temp paths moved into the prefix) and then becomes
``nginx -p <prefix> -c <prefix>/nginx.conf -g 'daemon off;'``, so the caller
owns the process and stops it with a signal. Every replacement must match
the shipped file, so the file and this script cannot drift apart unnoticed.
The tests start nginx exactly this way. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SHIPPED = Path(__file__).resolve().with_name("nginx.conf")
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class RenderError(ValueError):
    pass


def _replace(text: str, pattern: str, replacement: str) -> str:
    """Replace on uncommented lines; at least one must match."""
    regex = re.compile(rf"^(?P<indent>[ \t]*){pattern}", re.MULTILINE)
    new, count = regex.subn(lambda m: m.group("indent") + replacement, text)
    if not count:
        raise RenderError(f"deploy/nginx.conf has no line matching {pattern!r}")
    return new


def render(
    source: str,
    prefix: Path,
    *,
    http_port: int,
    https_port: int,
    upstream: str,
    cert: Path,
    key: Path,
    settings: Sequence[tuple[str, str]] = (),
    proxy_bind: str | None = None,
) -> str:
    text = _replace(source, r"listen 8080;", f"listen {http_port};")
    text = _replace(text, r"listen 8443 ssl http2;", f"listen {https_port} ssl http2;")
    text = _replace(text, r"server 127\.0\.0\.1:8000;", f"server {upstream};")
    text = _replace(text, r"ssl_certificate \S+;", f"ssl_certificate {cert};")
    text = _replace(text, r"ssl_certificate_key \S+;", f"ssl_certificate_key {key};")
    text = _replace(text, r"pid \S+;", f"pid {prefix / 'nginx.pid'};")
    text = _replace(text, r"error_log \S+", f"error_log {prefix / 'logs' / 'error.log'}")
    text = _replace(text, r"access_log /\S+;", f"access_log {prefix / 'logs' / 'access.log'};")
    for name in TEMP_PATHS:
        directive = f"{name}_temp_path"
        text = _replace(text, rf"{directive} \S+;", f"{directive} {prefix / 'tmp' / name};")
    for name, value in settings:
        text = _replace(text, rf"{re.escape(name)} [^;]*;", f"{name} {value};")
    if proxy_bind:
        # Connect to the upstream from this address, so the app's peer
        # address differs from the client's (the tests use 127.0.0.2).
        text = _replace(text, r"proxy_http_version 1\.1;", f"proxy_http_version 1.1;\n        proxy_bind {proxy_bind};")
    return text


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost and 127.0.0.1 (needs openssl)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _setting(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected DIRECTIVE=VALUE, got {raw!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, required=True, help="directory for the config, pid, logs and temp files")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--https-port", type=int, default=8443)
    parser.add_argument("--upstream", default="127.0.0.1:8000", help="gunicorn's host:port")
    parser.add_argument("--cert", type=Path, help="certificate chain (PEM)")
    parser.add_argument("--key", type=Path, help="private key (PEM)")
    parser.add_argument("--self-signed", action="store_true", help="make a throwaway pair in <prefix>/tls")
    parser.add_argument("--set", dest="settings", type=_setting, action="append", default=[], metavar="DIRECTIVE=VALUE")
    parser.add_argument("--proxy-bind", help="source address for upstream connections")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--check", action="store_true", help="only render and run nginx -t")
    args = parser.parse_args(argv)

    prefix: Path = args.prefix.resolve()
    for sub in ("logs", *(f"tmp/{name}" for name in TEMP_PATHS)):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    if args.self_signed:
        cert, key = self_signed(prefix / "tls")
    elif args.cert and args.key:
        cert, key = args.cert.resolve(), args.key.resolve()
    else:
        parser.error("give --cert and --key, or --self-signed")
    try:
        text = render(
            SHIPPED.read_text(),
            prefix,
            http_port=args.http_port,
            https_port=args.https_port,
            upstream=args.upstream,
            cert=cert,
            key=key,
            settings=args.settings,
            proxy_bind=args.proxy_bind,
        )
    except RenderError as exc:
        parser.error(str(exc))
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    command = [args.nginx, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "logs" / "error.log")]
    if args.check:
        sys.exit(subprocess.run([*command, "-t"], check=False).returncode)
    sys.stdout.flush()
    os.execv(args.nginx, [*command, "-g", "daemon off;"])


if __name__ == "__main__":
    main()
