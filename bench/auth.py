"""Authenticated streams for the bench: the jobstream-auth target.

The server runs with a random ``JWT_SECRET`` and ``STREAM_AUTH=required``;
every stream the load generator opens sends its own token (``sub`` bench-<i>,
so no verification can be shared between streams) in ``Authorization:
Bearer``, and the publisher sends a token with a publish pattern. Tokens are
minted here with PyJWT, not with the code under test, and handed to the load
generator in files.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

# Every run's topic is "bench" + random hex (bench/measure.py): a prefix
# pattern, so each connect also narrows the requested topic to the grant.
PATTERN = "bench*"
TTL_SECONDS = 24 * 3600  # far past any run: no stream ends at its exp


@dataclass(frozen=True)
class BenchAuth:
    """The secret one server verifies with, and the tokens it accepts."""

    secret: str

    @classmethod
    def random(cls) -> BenchAuth:
        return cls(secrets.token_urlsafe(48))  # 64 characters: past the 32-byte minimum

    def env(self) -> dict[str, str]:
        """The server's settings: streams need a valid JWT."""
        return {"JWT_SECRET": self.secret, "STREAM_AUTH": "required"}

    def mint(self, sub: str, subscribe: list[str], publish: list[str]) -> str:
        claims = {
            "sub": sub,
            "exp": int(time.time()) + TTL_SECONDS,
            "jobstream": {"subscribe": subscribe, "publish": publish, "admin": False},
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def write_tokens(self, directory: Path, streams: int) -> tuple[Path, Path]:
        """One token per stream (one a line), and the publisher's; their paths."""
        stream_file, publish_file = directory / "stream-tokens", directory / "publish-token"
        stream_file.write_text("".join(self.mint(f"bench-{i}", [PATTERN], []) + "\n" for i in range(streams)))
        publish_file.write_text(self.mint("bench-publisher", [], [PATTERN]) + "\n")
        return stream_file, publish_file
