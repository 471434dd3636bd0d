"""Retention: personal free text is kept for a period, then purged by a job (no TTL indexes).

FerretDB has no TTL indexes, so each service runs ``RetentionJob`` in ``runtime.background``:
it periodically clears the listed fields (message bodies, transcripts) of documents whose
timestamp is older than the retention period, keeping the rest of the record (ids, times,
categories) so that KPIs still add up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kefu_shared.envelope import utcnow
from kefu_shared.mongo import Collection

log = logging.getLogger(__name__)

PURGED = "[purged after retention period]"


@dataclass(frozen=True)
class RetentionRule:
    """In ``collection``, documents with ``timestamp_field`` older than the period (and matching
    ``where``) lose ``fields`` (set to a marker) or, with ``delete=True``, are deleted whole.

    A dotted field (``review.text``) sits in a sub-document that may be absent or null: it is
    purged only where it exists, so the job never creates half a sub-document.
    """

    collection: Collection
    timestamp_field: str
    fields: Sequence[str] = ()
    delete: bool = False
    where: Mapping[str, Any] = field(default_factory=dict)


class RetentionJob:
    def __init__(
        self,
        rules: Sequence[RetentionRule],
        *,
        period: timedelta,
        interval_seconds: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._rules = list(rules)
        self._period = period
        self._interval = interval_seconds
        self._clock = clock

    async def purge_once(self) -> int:
        """Apply every rule now; returns how many documents were purged (per update) or deleted."""
        cutoff = self._clock() - self._period
        total = 0
        for rule in self._rules:
            old = {**rule.where, rule.timestamp_field: {"$lt": cutoff}}
            if rule.delete:
                total += (await rule.collection.delete_many(old)).deleted_count
                continue
            top = [f for f in rule.fields if "." not in f]
            if top:
                # Only documents not purged yet: the job can run often at little cost.
                pending = {**old, "$or": [{f: {"$ne": PURGED}} for f in top]}
                result = await rule.collection.update_many(
                    pending, {"$set": dict.fromkeys(top, PURGED)}
                )
                total += result.modified_count
            for nested in (f for f in rule.fields if "." in f):
                result = await rule.collection.update_many(
                    {**old, nested: {"$exists": True, "$nin": [PURGED, None]}},
                    {"$set": {nested: PURGED}},
                )
                total += result.modified_count
        if total:
            log.info("retention purge: %d documents older than %s", total, cutoff.isoformat())
        return total

    async def run(self) -> None:
        while True:
            await self.purge_once()
            await asyncio.sleep(self._interval)
