"""Which event types a webhook subscription wants: exact names or dotted patterns with ``*``.

A pattern is dot-separated segments; ``*`` stands for one segment, and as the last segment for
one or more (``inquiry.*`` matches ``inquiry.received`` and ``inquiry.sla.breached``; a lone
``*`` matches every event; ``*.failed`` matches ``notification.failed``). Segments of event
types are lowercase snake_case, like every kefu ``event_type``.
"""

from __future__ import annotations

import re

EVENT_TYPE_PATTERN = r"^(\*|[a-z][a-z0-9_]*)(\.(\*|[a-z][a-z0-9_]*))*$"
"""What a subscription's ``event_types`` entry must look like (also checked by the API)."""

MAX_PATTERN_LENGTH = 100

_VALID = re.compile(EVENT_TYPE_PATTERN)


def is_valid_pattern(pattern: str) -> bool:
    return len(pattern) <= MAX_PATTERN_LENGTH and _VALID.fullmatch(pattern) is not None


def matches(pattern: str, event_type: str) -> bool:
    """True if ``event_type`` (e.g. ``inquiry.received``) is selected by ``pattern``."""
    wanted = pattern.split(".")
    actual = event_type.split(".")
    for i, segment in enumerate(wanted):
        last = i == len(wanted) - 1
        if segment == "*" and last:
            return len(actual) > i  # one or more remaining segments
        if i >= len(actual) or (segment != "*" and segment != actual[i]):
            return False
    return len(actual) == len(wanted)


def matches_any(patterns: tuple[str, ...] | list[str], event_type: str) -> bool:
    return any(matches(p, event_type) for p in patterns)
