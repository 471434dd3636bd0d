"""Erasure of one customer's personal data (PIPL, the right to deletion).

What goes is data, not code: each service's ``data/erasure.json`` lists, per collection, the
field holding the customer id and the fields to blank. Ids, amounts, states and timestamps stay
(accounting and KPIs need them). Versioned documents get their version bumped in the same
update, so a writer that read the document before the erasure fails its compare-and-set, rereads
and keeps the erasure. Blanking is idempotent; the confirmation ``CustomerDataErased`` goes out
once, through the outbox of an erasure record applied at most once per consumed message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from kefu_shared import topics
from kefu_shared.contracts.privacy import CustomerDataErased, CustomerErasureRequested
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope
from kefu_shared.mongo import Document
from kefu_shared.outbox import OutboxMessage

Database = AsyncDatabase[Document]


ERASURES = "privacy_erasures"
"""The collection where each service records the requests it has carried out."""


@dataclass(frozen=True)
class ErasureRule:
    collection: str
    match: str  # the field holding the customer id
    blank: dict[str, Any]  # field (dotted paths allowed) -> the value it gets
    only_if: str | None = None  # a sub-document that must exist for dotted paths
    versioned: bool = True


def load_rules(path: Path) -> list[ErasureRule]:
    return [ErasureRule(**rule) for rule in json.loads(path.read_text())["rules"]]


async def blank_customer(db: Database, customer_id: str, rules: list[ErasureRule]) -> int:
    """Blank the customer's personal fields everywhere; returns the documents touched."""
    touched = 0
    for rule in rules:
        query: dict[str, Any] = {rule.match: customer_id}
        if rule.only_if:
            query[rule.only_if] = {"$ne": None}
        update: dict[str, Any] = {"$set": rule.blank}
        if rule.versioned:
            update["$inc"] = {"version": 1}
        result = await db[rule.collection].update_many(query, update)
        touched += result.modified_count
    return touched


async def erase_customer(
    request: CustomerErasureRequested,
    envelope: Envelope[Any],
    db: Database,
    rules: list[ErasureRule],
    store: VersionedDocumentStore,
    topic_of: Any,
    now: datetime,
    *,
    service: str,
) -> None:
    touched = await blank_customer(db, request.customer_id, rules)

    def record(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        event = CustomerDataErased(
            request_id=request.request_id,
            customer_id=request.customer_id,
            service=service,
            documents=touched,
            erased_at=now,
        )
        out = Envelope.wrap(
            event,
            source=service,
            correlation_id=envelope.correlation_id,
            causation_id=envelope.id,
            event_id=f"{service}:{request.request_id}",
        )
        state = {"customer_id": request.customer_id, "documents": touched, "erased_at": now}
        return Change(state, [OutboxMessage.from_envelope(out, topic_of(topics.PRIVACY_EVENTS))])

    await store.mutate(f"erased:{request.request_id}", record, message_id=envelope.id)
