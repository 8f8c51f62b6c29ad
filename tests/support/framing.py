"""The SSE framing cases, shared by the encoder's tests and the wire tests.

Each row: (name, data as published, exact ``data:`` lines on the wire, what a
browser dispatches). Line breaks follow the WHATWG event-stream rules: CR, LF
and CRLF all end a line.
"""

from __future__ import annotations

FRAMING = [
    ("plain", "hello", b"data: hello\n", "hello"),
    ("multi-line LF", "a\nb\nc", b"data: a\ndata: b\ndata: c\n", "a\nb\nc"),
    ("CR only", "a\rb", b"data: a\ndata: b\n", "a\nb"),
    ("CRLF", "a\r\nb", b"data: a\ndata: b\n", "a\nb"),
    ("mixed breaks", "a\r\n\rb\nc", b"data: a\ndata: \ndata: b\ndata: c\n", "a\n\nb\nc"),
    ("unicode", "héllo ✓ 日本", "data: héllo ✓ 日本\n".encode(), "héllo ✓ 日本"),
    ("empty", "", b"data: \n", ""),
    ("trailing newline", "x\n", b"data: x\ndata: \n", "x\n"),
    (
        "injection",
        "\n\nevent: evil\ndata: x",
        b"data: \ndata: \ndata: event: evil\ndata: data: x\n",
        "\n\nevent: evil\ndata: x",
    ),
    ("leading space kept", " padded", b"data:  padded\n", " padded"),
    ("colon", "a: b", b"data: a: b\n", "a: b"),
]
