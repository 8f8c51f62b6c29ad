"""Topic filters for ``/stream?topic=``.

A pattern is an exact topic name, or ends in ``*`` to match every topic that
starts with what precedes it, at any depth (``jobs/*`` matches ``jobs/a`` and
``jobs/a/b``). Several patterns are a union; no pattern matches everything.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

from streaming.core.events import check_text

MAX_PATTERNS = 50
MAX_PATTERN_LENGTH = 200
# Topics under this prefix belong to the jobs package (jobs/feed.py publishes
# ``jobs/<id>`` through StreamingService.publish, which checks nothing); a
# publisher may not write there, or it could rewrite a job on every board.
RESERVED_TOPIC_PREFIX = "jobs/"
# The server's own topics (the canary, streaming/ops/canary.py): never
# published by a client, never offered to a stream, never in the history.
INTERNAL_TOPIC_PREFIX = "jobstream/"


_CONTROL = re.compile(r"[\r\n\0]")


def check_topic(topic: Any) -> str:
    """A topic a publisher may use; ``ValueError`` naming the rule otherwise.

    Topics under ``RESERVED_TOPIC_PREFIX`` are refused: only the jobs package
    writes there; so are those under ``INTERNAL_TOPIC_PREFIX``: only the server.
    """
    if not isinstance(topic, str) or not topic.strip():
        raise ValueError("topic must be a non-empty string")
    if len(topic) > MAX_PATTERN_LENGTH or _CONTROL.search(topic) or "*" in topic:
        raise ValueError(f"topic must be at most {MAX_PATTERN_LENGTH} characters without '*', CR, LF or NUL")
    check_text("topic", topic)
    if topic.startswith(RESERVED_TOPIC_PREFIX):
        raise ValueError(f"topics under {RESERVED_TOPIC_PREFIX!r} are reserved for the jobs API (POST /jobs)")
    if is_internal(topic):
        raise ValueError(f"topics under {INTERNAL_TOPIC_PREFIX!r} are reserved for the server itself")
    return topic


def is_internal(topic: str) -> bool:
    """A topic of the server's own (``INTERNAL_TOPIC_PREFIX``): no stream ever gets it."""
    return topic.startswith(INTERNAL_TOPIC_PREFIX)


def check_pattern(pattern: str) -> str:
    """A ``topic=`` filter pattern: the rules of a topic, plus a trailing ``*``."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"topic pattern longer than {MAX_PATTERN_LENGTH} characters")
    if _CONTROL.search(pattern):
        raise ValueError("topic pattern may not contain CR, LF or NUL")
    return check_text("topic pattern", pattern)


SMALL_EXACT = 8


class TopicFilter:
    __slots__ = ("everything", "exact", "patterns", "prefixes")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys(p for p in patterns if p))
        if len(self.patterns) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} topic patterns per stream")
        for pattern in self.patterns:
            check_pattern(pattern)
        exact = tuple(p for p in self.patterns if not p.endswith("*"))
        if exact == self.patterns:
            exact = self.patterns  # the same tuple: no prefix among them
        # A tuple while small: every open stream holds one, a frozenset of one
        # topic is 216 bytes and its tuple 48, and ``in`` over a few is as fast.
        self.exact: Collection[str] = exact if len(exact) <= SMALL_EXACT else frozenset(exact)
        self.prefixes = tuple(p[:-1] for p in self.patterns if p.endswith("*"))
        # "*" alone (an empty prefix) is the same as no filter.
        self.everything = not self.patterns or "" in self.prefixes

    @classmethod
    def nothing(cls) -> TopicFilter:
        """A filter no topic matches: a WebSocket before its first subscribe."""
        none = cls(("-",))
        none.patterns, none.exact, none.prefixes = (), frozenset(), ()
        return none

    def matches(self, topic: str) -> bool:
        if self.everything or topic in self.exact:
            return True
        return topic.startswith(self.prefixes) if self.prefixes else False

    def could_match_prefix(self, prefix: str) -> bool:
        """Whether some topic under ``prefix`` (e.g. ``"jobs/"``) can match."""
        if self.everything:
            return True
        if any(p.startswith(prefix) for p in self.exact):
            return True
        return any(p.startswith(prefix) or prefix.startswith(p) for p in self.prefixes)

    def __repr__(self) -> str:
        return f"TopicFilter({list(self.patterns)!r})"
