"""Mapping of deliveries and customer preferences to documents, and the delivery-log queries.

Writes go through ``VersionedDocumentStore`` (compare-and-set, outbox, idempotence); the reads
here are plain queries on the same collections.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kefu_shared.documents import DueTimes
from kefu_shared.mongo import Collection, Document, IndexSpec
from pymongo import ASCENDING, DESCENDING

from kefu_notifier.domain.catalogue import ChannelKind, Purpose
from kefu_notifier.domain.delivery import DUE_STATUSES, Content, Delivery, DeliveryStatus
from kefu_notifier.domain.policies import Preferences, Route

DELIVERIES = "deliveries"
CUSTOMERS = "customers"
# When each delivery is next due: the dispatcher scans this, not every delivery.
DELIVERIES_DUE = "deliveries_due"
_DUE = [s.value for s in DUE_STATUSES]

INDEXES = [
    # The dispatcher's scan: due deliveries, oldest first.
    IndexSpec(DELIVERIES, [("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"),
    # The delivery log: one customer's deliveries, newest first.
    IndexSpec(
        DELIVERIES, [("customer_id", ASCENDING), ("created_at", DESCENDING)], name="by_customer"
    ),
    IndexSpec(DELIVERIES_DUE, [("at", ASCENDING)], name="at"),
    # One field, so FerretDB on PostgreSQL serves `{status: value}` from an index: the due-time
    # reconcile reads the deliveries still due, not every delivery ever sent.
    IndexSpec(DELIVERIES, [("status", ASCENDING)], name="status"),
]


def _due_at(state: Document) -> datetime | None:
    status = state.get("status")
    if getattr(status, "value", status) not in _DUE:
        return None
    at = state.get("next_attempt_at")
    return at if isinstance(at, datetime) else None


def delivery_due_times(collection: Collection, due_collection: Collection) -> DueTimes:
    return DueTimes(
        due_collection,
        collection,
        due_at=_due_at,
        # One equality per status (served by the status index; `$in` reads every delivery).
        may_be_due=[{"status": status} for status in sorted(_DUE)],
        projection={"status": 1, "next_attempt_at": 1},
    )


def delivery_to_state(d: Delivery) -> Document:
    return {
        "delivery_id": d.delivery_id,
        "customer_id": d.customer_id,
        "purpose": d.purpose.value,
        "template": d.template,
        "language": d.language,
        "requested_by": d.requested_by,
        "correlation_id": d.correlation_id,
        "request_message_id": d.request_message_id,
        "routes": [{"channel": r.channel.value, "address": r.address} for r in d.routes],
        "content": ({"subject": d.content.subject, "body": d.content.body} if d.content else None),
        "status": d.status.value,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "next_attempt_at": d.next_attempt_at,
        "attempts": d.attempts,
        "channel": d.channel.value if d.channel else None,
        "last_error": d.last_error,
        "reason": d.reason,
        "sent_at": d.sent_at,
        "provider_message_id": d.provider_message_id,
    }


def delivery_from_state(key: str, s: Document) -> Delivery:
    content = s.get("content")
    return Delivery(
        idempotency_key=key,
        delivery_id=s["delivery_id"],
        customer_id=s["customer_id"],
        purpose=Purpose(s["purpose"]),
        template=s["template"],
        language=s["language"],
        requested_by=s["requested_by"],
        correlation_id=s["correlation_id"],
        request_message_id=s["request_message_id"],
        routes=tuple(Route(ChannelKind(r["channel"]), r["address"]) for r in s.get("routes", ())),
        content=Content(content["subject"], content["body"]) if content else None,
        status=DeliveryStatus(s["status"]),
        created_at=s["created_at"],
        updated_at=s["updated_at"],
        next_attempt_at=s.get("next_attempt_at"),
        attempts=int(s.get("attempts", 0)),
        channel=ChannelKind(s["channel"]) if s.get("channel") else None,
        last_error=s.get("last_error"),
        reason=s.get("reason"),
        sent_at=s.get("sent_at"),
        provider_message_id=s.get("provider_message_id"),
    )


def preferences_from_state(s: Document | None) -> Preferences:
    if not s:
        return Preferences()
    return Preferences(
        opted_out_purposes=frozenset(Purpose(p) for p in s.get("opted_out_purposes", ())),
        opted_out_channels=frozenset(ChannelKind(c) for c in s.get("opted_out_channels", ())),
    )


RECENT_SENDS_FIELD = "recent_sends"
"""A customer's sends still in the rate-limit window (``RateLimit.recent``)."""


def recent_sends_from_state(s: Document | None) -> list[datetime]:
    return list(s.get(RECENT_SENDS_FIELD, ())) if s else []


# What a notice said: purged from finished deliveries after the retention period.
RENDERED_TEXTS = ("content.subject", "content.body")


def finished() -> Document:
    """Deliveries that will not be sent (again): their texts are no longer needed."""
    return {"status": {"$nin": [s.value for s in DUE_STATUSES]}}


# The log shows where a notice is, not what it said: the rendered body may hold a verification
# code or an address, so it stays out of the API.
LOG_PROJECTION = {"outbox": 0, "applied": 0, "content": 0, "routes": 0, "outbox_pending": 0}


def log_entry(doc: Document) -> dict[str, Any]:
    entry = {k: v for k, v in doc.items() if k not in LOG_PROJECTION}
    entry["idempotency_key"] = entry.pop("_id")
    return entry


class DeliveryLog:
    def __init__(self, collection: Collection, due_times: DueTimes | None = None) -> None:
        self._collection = collection
        self._due_times = due_times

    async def get(self, key: str) -> dict[str, Any] | None:
        doc = await self._collection.find_one({"_id": key}, LOG_PROJECTION)
        return log_entry(doc) if doc else None

    async def search(
        self, *, customer_id: str | None, status: DeliveryStatus | None, limit: int
    ) -> list[dict[str, Any]]:
        query: Document = {}
        if customer_id:
            query["customer_id"] = customer_id
        if status:
            query["status"] = status.value
        cursor = self._collection.find(query, LOG_PROJECTION).sort("created_at", DESCENDING)
        return [log_entry(doc) for doc in await cursor.limit(limit).to_list()]

    async def due_keys(self, now: datetime, limit: int) -> list[str]:
        if self._due_times is not None:
            return await self._due_times.due(now, limit)
        cursor = self._collection.find(
            {"status": {"$in": [s.value for s in DUE_STATUSES]}, "next_attempt_at": {"$lte": now}},
            {"_id": 1},
        ).sort("next_attempt_at", ASCENDING)
        return [str(doc["_id"]) for doc in await cursor.limit(limit).to_list()]
