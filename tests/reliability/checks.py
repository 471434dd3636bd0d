"""Judging a run by what the services published, never by peeking into their stores.

"The same change published twice under different ids" is found by grouping every event by
what identifies the change: its type, subject, the message that caused it (``causation_id``)
and its data without the fields that depend on when it was processed (``*_at``,
``*_seconds``, attempt counts). Two distinct envelope ids in one group mean a change was
decided twice, e.g. a redelivered message applied again after a crash.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

# Fields whose value depends on the moment of processing, not on the change itself.
_MOMENT_SUFFIXES = ("_at", "_seconds", "_until")
_MOMENT_FIELDS = frozenset({"attempts", "due_at"})


def _stable(data: dict[str, Any]) -> str:
    kept = {
        k: v
        for k, v in data.items()
        if k not in _MOMENT_FIELDS and not k.endswith(_MOMENT_SUFFIXES)
    }
    return json.dumps(kept, sort_keys=True, default=str)


def change_key(envelope: dict[str, Any]) -> tuple[str, str, str, str]:
    data = envelope.get("data") or {}
    return (
        str(envelope.get("type")),
        str(envelope.get("subject")),
        str(envelope.get("causation_id")),
        _stable(data if isinstance(data, dict) else {"value": data}),
    )


def changes_under_two_ids(envelopes: Iterable[dict[str, Any]]) -> dict[tuple[str, ...], set[str]]:
    """Groups of one change that went out with more than one envelope id."""
    ids: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for e in envelopes:
        ids[change_key(e)].add(str(e.get("id")))
    return {k: v for k, v in ids.items() if len(v) > 1}


def republished(envelopes: Iterable[dict[str, Any]]) -> int:
    """Records beyond the first of the same envelope id (outbox resends after a crash: allowed,
    consumers deduplicate on the id)."""
    counts = Counter(str(e.get("id")) for e in envelopes)
    return sum(n - 1 for n in counts.values() if n > 1)


def distinct_ids_by(
    envelopes: Iterable[dict[str, Any]], event_type: str, field: str
) -> dict[str, set[str]]:
    """For one event type: the data field's value -> the distinct envelope ids carrying it."""
    out: dict[str, set[str]] = defaultdict(set)
    for e in envelopes:
        if e.get("type") == event_type:
            out[str((e.get("data") or {}).get(field))].add(str(e.get("id")))
    return out


PROVIDER_LINE = re.compile(r"notification (\S+) via \S+ \(log provider\)")


def provider_calls(log_lines: Iterable[str]) -> Counter[str]:
    """Calls the notifier's log provider received, per delivery id (from its log)."""
    calls: Counter[str] = Counter()
    for line in log_lines:
        if "(log provider)" not in line:
            continue
        try:
            message = str(json.loads(line).get("message", ""))
        except ValueError:
            message = line
        m = PROVIDER_LINE.search(message)
        if m:
            calls[m.group(1)] += 1
    return calls
