"""Topic filters for ``/stream?topic=``.

A pattern is an exact topic name, or ends in ``*`` to match every topic that
starts with what precedes it, at any depth (``jobs/*`` matches ``jobs/a`` and
``jobs/a/b``). Several patterns are a union; no pattern matches everything.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_PATTERNS = 50
MAX_PATTERN_LENGTH = 200


class TopicFilter:
    __slots__ = ("everything", "exact", "patterns", "prefixes")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys(p for p in patterns if p))
        if len(self.patterns) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} topic patterns per stream")
        for pattern in self.patterns:
            if len(pattern) > MAX_PATTERN_LENGTH:
                raise ValueError(f"topic pattern longer than {MAX_PATTERN_LENGTH} characters")
        self.exact = frozenset(p for p in self.patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in self.patterns if p.endswith("*"))
        # "*" alone (an empty prefix) is the same as no filter.
        self.everything = not self.patterns or "" in self.prefixes

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
