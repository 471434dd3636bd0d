"""The audit log: who did what, when, to what, from where, with the before and after.

Append-only: entries are inserted with a unique id and never updated or deleted through any
API (``AuditLog`` has no method that could). Used for order changes, failed identity checks,
supervisor overrides, role changes and unmasked access to personal data.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from kefu_shared.envelope import new_id, utcnow
from kefu_shared.mongo import Collection, Document, IndexSpec

AUDIT_COLLECTION = "audit_log"
AUDIT_INDEXES = (
    IndexSpec(AUDIT_COLLECTION, [("subject", 1), ("at", DESCENDING)], name="by_subject"),
    IndexSpec(AUDIT_COLLECTION, [("at", DESCENDING)], name="by_time"),
)


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    role: str
    action: str
    subject: str
    at: datetime
    source: str = ""
    before: Any = None
    after: Any = None
    reason: str = ""
    id: str = ""

    def to_document(self) -> Document:
        return {
            "_id": self.id or new_id(),
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "subject": self.subject,
            "at": self.at,
            "source": self.source,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }

    @classmethod
    def from_document(cls, doc: Document) -> AuditEntry:
        return cls(
            id=str(doc["_id"]),
            actor=doc["actor"],
            role=doc["role"],
            action=doc["action"],
            subject=doc["subject"],
            at=doc["at"],
            source=doc.get("source", ""),
            before=doc.get("before"),
            after=doc.get("after"),
            reason=doc.get("reason", ""),
        )


class AuditLog:
    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    async def record(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        subject: str,
        source: str = "",
        before: Any = None,
        after: Any = None,
        reason: str = "",
        entry_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry. ``entry_id`` makes a retried write land once (insert-or-ignore)."""
        entry = AuditEntry(
            id=entry_id or new_id(),
            actor=actor,
            role=role,
            action=action,
            subject=subject,
            at=utcnow(),
            source=source,
            before=before,
            after=after,
            reason=reason,
        )
        with contextlib.suppress(DuplicateKeyError):  # the same entry retried
            await self._collection.insert_one(entry.to_document())
        return entry

    async def entries(
        self, *, subject: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        query: Document = {}
        if subject:
            query["subject"] = subject
        if action:
            query["action"] = action
        cursor = self._collection.find(query).sort("at", DESCENDING).limit(min(limit, 500))
        return [AuditEntry.from_document(d) for d in await cursor.to_list()]
