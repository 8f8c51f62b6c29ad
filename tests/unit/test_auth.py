"""The token guard's rules, without a server: which routes need a token, and how one is matched.

Served answers (401s, CORS, trusted proxies) are in ``tests/integration/test_auth_server.py``.
"""

from __future__ import annotations

from server.auth import needs_token, token_matches


def test_the_guard_covers_writes_and_admin_only() -> None:
    assert needs_token("POST", "/events") and needs_token("POST", "/jobs/1/cancel")
    assert needs_token("GET", "/admin/clients") and needs_token("DELETE", "/anything")
    for path in ("/stream", "/health", "/metrics", "/", "/openapi.json", "/jobs"):
        assert not needs_token("GET", path) and not needs_token("OPTIONS", path)
    assert token_matches("Bearer abc", b"abc") and token_matches("bearer  abc ", b"abc")
    assert not token_matches("Basic abc", b"abc") and not token_matches("Bearer abd", b"abc")
    assert not token_matches("Bearer ábc", b"abc")  # non-ASCII must not raise
