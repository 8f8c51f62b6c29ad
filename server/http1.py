"""A plain HTTP/1.x ``GET`` request head, read the way gunicorn reads it, or not at all.

The worker's front door (``server.worker``) reads the first request of a
connection itself when it is one the app asked for (``GET /stream``), to
skip gunicorn's per-request machinery. It must never read a request
differently from gunicorn, so this parser is narrow instead of complete:
``parse_head`` returns ``None`` for anything beyond a plain request (a body,
``Expect``, ``Upgrade``, a repeated field, a field name with ``_``,
obs-folding, bytes outside printable ASCII, a head not all received yet, bytes
after it), and gunicorn then parses those bytes from the start: nothing has
been consumed. ``environ`` builds what ``gunicorn.http.wsgi.create`` builds
for the same request (tests/unit/test_http1.py compares the two).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

# gunicorn's default limit_request_line + limit_request_field_size is larger,
# but a stream request that needs more is not plain: gunicorn reads it.
MAX_HEAD = 8192
MAX_FIELDS = 100
VERSIONS = ("HTTP/1.1", "HTTP/1.0")
# One field line: an RFC 9110 token, a colon, printable ASCII (no tab: gunicorn's
# to judge), the line end. A head whose field lines are not all of this shape
# (obs-fold, a space before the colon, control bytes) is gunicorn's.
_FIELD = r"[!#$%&'*+\-.^`|~0-9A-Za-z]+:[ -~]*\r\n"
_FIELD_LINES = re.compile(f"(?:{_FIELD}){{0,{MAX_FIELDS}}}")
_FIELD_PARTS = re.compile(r"([^:]+):([ -~]*)\r\n")
# Fields whose handling is gunicorn's: bodies, 100-continue, protocol switches.
_NOT_PLAIN = frozenset({"CONTENT-LENGTH", "TRANSFER-ENCODING", "EXPECT", "UPGRADE", "HTTP2-SETTINGS", "TE"})


class Head(NamedTuple):
    """One parsed request head: field names upper-cased, values stripped."""

    method: str
    target: str  # RAW_URI
    path: str
    query: str
    version: str  # SERVER_PROTOCOL
    fields: tuple[tuple[str, str], ...]
    size: int  # bytes up to and with the blank line


def parse_head(data: bytes, paths: tuple[str, ...], upgrades: tuple[str, ...] = ()) -> Head | None:
    """The head at the start of ``data`` if it is a plain ``GET`` of one of
    ``paths`` or ``upgrades`` (a query string allowed), complete, and all of
    ``data``. A request for one of ``upgrades`` may carry ``Upgrade: websocket``
    (which gunicorn, too, hands to the app as a plain field)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(data) or not data.isascii():
        return None
    text = data[: end + 2].decode("ascii")  # the request line and every field line, each with its CRLF
    line_end = text.find("\r\n")
    parts = text[:line_end].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] not in VERSIONS:
        return None
    target = parts[1]
    path, _, query = target.partition("?")
    if (path not in paths and path not in upgrades) or "#" in target or not target.isprintable():
        return None
    lines = text[line_end + 2 :]
    if not _FIELD_LINES.fullmatch(lines):
        return None
    fields: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in _FIELD_PARTS.findall(lines):
        name = name.upper()
        if name in seen or (name in _NOT_PLAIN and not _websocket(name, value, path, upgrades)):
            return None
        seen.add(name)
        fields.append((name, value.strip(" ")))
    return Head("GET", target, path, query, parts[2], tuple(fields), end + 4)


def _websocket(name: str, value: str, path: str, upgrades: tuple[str, ...]) -> bool:
    return name == "UPGRADE" and path in upgrades and value.strip(" ").lower() == "websocket"


def scheme_of(head: Head, secure_headers: Mapping[str, str]) -> str | None:
    """``https`` or ``http`` from a trusted peer's scheme fields (gunicorn's
    ``secure_scheme_headers``); ``None`` when they disagree (gunicorn's 400)."""
    scheme = None
    for name, value in head.fields:
        expected = secure_headers.get(name)
        if expected is None:
            continue
        this = "https" if value == expected else "http"
        if scheme is not None and this != scheme:
            return None
        scheme = this
    return scheme or "http"


def environ(
    head: Head,
    sock: Any,
    peer: tuple[str, int],
    server: tuple[str, int],
    scheme: str,
    base: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The WSGI environ gunicorn would build, from ``base`` (its ``base_environ``);
    ``None`` if a field would make it differ (``SCRIPT_NAME``, a name with
    ``_``: gunicorn's header rules)."""
    env: dict[str, Any] = dict(base)
    env["wsgi.input"] = io.BytesIO()
    env["gunicorn.socket"] = sock
    env["REQUEST_METHOD"] = head.method
    env["QUERY_STRING"] = head.query
    env["RAW_URI"] = head.target
    env["SERVER_PROTOCOL"] = head.version
    for name, value in head.fields:
        if "_" in name:
            return None  # SCRIPT_NAME, or gunicorn's header_map decides
        if name == "CONTENT-TYPE":
            env["CONTENT_TYPE"] = value
            continue
        env["HTTP_" + name.replace("-", "_")] = value
    env["wsgi.url_scheme"] = scheme
    env["REMOTE_ADDR"] = peer[0]
    env["REMOTE_PORT"] = str(peer[1])
    env["SERVER_NAME"] = server[0]
    env["SERVER_PORT"] = str(server[1])
    env["PATH_INFO"] = head.path
    env["SCRIPT_NAME"] = ""
    return env
