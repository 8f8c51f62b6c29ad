"""Strings that have broken servers, and the requests that carry them into every client-set field.

Used by ``tests/unit/test_nasty_inputs.py`` (in-process) and
``tests/integration/test_nasty_inputs_server.py`` (real gunicorn): every
answer must be a JSON 4xx or a success, never a 5xx.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

NASTY: list[str] = [
    "",
    " ",
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "a\udc00b",
    "\ude00\ud83d",  # a pair in the wrong order
    "\udbff\udfff",  # a proper pair (U+10FFFF)
    "\x00",
    "a\x00b",
    "\r\n",
    "a\rb",
    "\u2028\u2029",
    "\u202eevil\u202c",  # RTL override
    "\u200f\u200e",  # RTL and LTR marks
    "\ufeff",  # BOM
    "\x1b[31m",
    "¹",
    "٣",
    "\uff15",  # FULLWIDTH DIGIT FIVE
    "-1",
    "1e3",
    "0x10",
    "9" * 5000,  # past int()'s 4,300-digit limit
    "x" * 201,  # past the topic length
    "y" * 40000,  # big, but inside the 64 KiB body
    "*",
    "jobs/x",
    "snapshot",
    "%00%ff",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    '"\\',
    "\U0001f600",
    "null",
]


def body(value: dict[str, Any]) -> bytes:
    """JSON as a client would send it, lone surrogates escaped (``"\\ud800"``)."""
    return json.dumps(value).encode("ascii")


def event_bodies() -> list[bytes]:
    """Every JSON string field of ``POST /events`` set to every nasty string."""
    out = []
    for s in NASTY:
        out += [
            body({"topic": s, "data": 1}),
            body({"topic": "t", "event": s, "data": 1}),
            body({"topic": "t", "data": s}),
            body({"topic": "t", "data": {"k": s}}),
            body({"topic": "t", "data": {s: [s]}}),
            body({"topic": "t", "data": 1, s: 1}),
        ]
    return out


def job_bodies() -> list[bytes]:
    """Every JSON string field of ``POST /jobs`` (type, name, params of both built-in types)."""
    out = []
    for s in NASTY:
        out += [
            body({"type": s}),
            body({"type": "fail", "name": s}),
            body({"type": "fail", "params": {"message": s}}),
            body({"type": "fail", "params": {s: 1}}),
            body({"type": "sleep", "params": {"seconds": s}}),
            body({"type": "sleep", "params": {"steps": s}}),
            body({"type": "fail", s: 1}),
        ]
    return out


def encoded(s: str) -> str:
    """``s`` as a query value; a lone surrogate as its (invalid) UTF-8 bytes, %ED%A0%80."""
    return quote(s.encode("utf-8", "surrogatepass"), safe="")


def job_queries() -> list[str]:
    """Every query parameter of ``GET /jobs`` (and ``GET /jobs/<id>``, cancel) set to every nasty string."""
    out = []
    for s in [*NASTY, "\udcff"]:
        v = encoded(s)
        out += [f"/jobs?limit={v}", f"/jobs?status={v}", f"/jobs?cursor={v}", f"/jobs?limit=1&cursor={v}"]
        out += [f"/jobs?{v}={v}", f"/jobs/{v}"]
    out += ["/jobs?limit=%FF", "/jobs?status=%FF", "/jobs?cursor=%FF%FE", "/jobs?limit=1&limit=2"]
    return out
