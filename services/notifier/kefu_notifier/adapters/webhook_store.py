"""Mapping of webhook subscriptions and deliveries to documents, and their queries.

Writes go through ``VersionedDocumentStore`` (compare-and-set, outbox, idempotence); the reads
here are plain queries. ``SubscriptionDirectory`` keeps the (few) subscriptions that record
events in memory for a moment, so the fan-out does not query them once per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kefu_shared.mongo import Collection, Document, IndexSpec
from pymongo import ASCENDING, DESCENDING

from kefu_notifier.domain.webhook_delivery import (
    DUE_STATUSES,
    FINAL_STATUSES,
    WebhookDelivery,
    WebhookDeliveryStatus,
)
from kefu_notifier.domain.webhook_subscription import (
    RECORDING_STATUSES,
    Subscription,
    SubscriptionStatus,
)

SUBSCRIPTIONS = "webhook_subscriptions"
WEBHOOK_DELIVERIES = "webhook_deliveries"

WEBHOOK_INDEXES = [
    # The webhook dispatcher's scan: due deliveries, oldest first.
    IndexSpec(
        WEBHOOK_DELIVERIES,
        [("status", ASCENDING), ("next_attempt_at", ASCENDING)],
        name="due",
    ),
    # One subscription's delivery log, newest first.
    IndexSpec(
        WEBHOOK_DELIVERIES,
        [("subscription_id", ASCENDING), ("created_at", DESCENDING)],
        name="by_subscription",
    ),
]


def subscription_to_state(s: Subscription) -> Document:
    return {
        "target_url": s.target_url,
        "event_types": list(s.event_types),
        "secret": s.secret,
        "description": s.description,
        "created_by": s.created_by,
        "status": s.status.value,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "consecutive_failures": s.consecutive_failures,
        "failing_since": s.failing_since,
        "last_failure_at": s.last_failure_at,
        "last_error": s.last_error,
        "last_success_at": s.last_success_at,
        "disabled_reason": s.disabled_reason,
        "disabled_at": s.disabled_at,
    }


def subscription_from_state(subscription_id: str, s: Document) -> Subscription:
    return Subscription(
        subscription_id=subscription_id,
        target_url=s["target_url"],
        event_types=tuple(s.get("event_types", ())),
        secret=s.get("secret", ""),
        description=s.get("description", ""),
        created_by=s.get("created_by", ""),
        status=SubscriptionStatus(s["status"]),
        created_at=s["created_at"],
        updated_at=s["updated_at"],
        consecutive_failures=int(s.get("consecutive_failures", 0)),
        failing_since=s.get("failing_since"),
        last_failure_at=s.get("last_failure_at"),
        last_error=s.get("last_error"),
        last_success_at=s.get("last_success_at"),
        disabled_reason=s.get("disabled_reason"),
        disabled_at=s.get("disabled_at"),
    )


def webhook_delivery_to_state(d: WebhookDelivery) -> Document:
    return {
        "subscription_id": d.subscription_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "event_source": d.event_source,
        "event_subject": d.event_subject,
        "correlation_id": d.correlation_id,
        "body": d.body,
        "status": d.status.value,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "next_attempt_at": d.next_attempt_at,
        "attempts": d.attempts,
        "last_attempt_at": d.last_attempt_at,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "delivered_at": d.delivered_at,
    }


def webhook_delivery_from_state(delivery_id: str, s: Document) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_id=delivery_id,
        subscription_id=s["subscription_id"],
        event_id=s["event_id"],
        event_type=s["event_type"],
        event_source=s.get("event_source", ""),
        event_subject=s.get("event_subject", ""),
        correlation_id=s.get("correlation_id", ""),
        body=s["body"],
        status=WebhookDeliveryStatus(s["status"]),
        created_at=s["created_at"],
        updated_at=s["updated_at"],
        next_attempt_at=s.get("next_attempt_at"),
        attempts=int(s.get("attempts", 0)),
        last_attempt_at=s.get("last_attempt_at"),
        last_status_code=s.get("last_status_code"),
        last_error=s.get("last_error"),
        delivered_at=s.get("delivered_at"),
    )


# The API never shows the secret (only a hint) nor a delivery's body (it may hold customer
# messages): the log says where a delivery is, the receiver has the content.
SUBSCRIPTION_PROJECTION = {"outbox": 0, "applied": 0, "outbox_pending": 0, "version": 0}
DELIVERY_PROJECTION = {
    "outbox": 0,
    "applied": 0,
    "outbox_pending": 0,
    "version": 0,
    "body": 0,
    "trace": 0,
}


# What a webhook delivery carried (the event, which may quote a customer's message): purged from
# delivered or failed deliveries after the retention period, like the notices' texts.
WEBHOOK_BODY_FIELDS = ("body",)


def finished_webhook_deliveries() -> Document:
    """Webhook deliveries that will not be posted (again)."""
    return {"status": {"$in": [s.value for s in FINAL_STATUSES]}}


def delivery_entry(doc: Document) -> dict[str, Any]:
    entry = {k: v for k, v in doc.items() if k not in DELIVERY_PROJECTION}
    entry["delivery_id"] = entry.pop("_id")
    return entry


class WebhookLog:
    """Queries on subscriptions and deliveries (reads only)."""

    def __init__(self, subscriptions: Collection, deliveries: Collection) -> None:
        self._subscriptions = subscriptions
        self._deliveries = deliveries

    async def list_subscriptions(
        self, *, status: SubscriptionStatus | None, limit: int
    ) -> list[Subscription]:
        query: Document = (
            {"status": status.value}
            if status
            else {"status": {"$ne": SubscriptionStatus.DELETED.value}}
        )
        cursor = self._subscriptions.find(query, SUBSCRIPTION_PROJECTION).sort(
            "created_at", DESCENDING
        )
        docs = await cursor.limit(limit).to_list()
        return [subscription_from_state(str(doc["_id"]), doc) for doc in docs]

    async def deliveries_of(
        self, subscription_id: str, *, status: WebhookDeliveryStatus | None, limit: int
    ) -> list[dict[str, Any]]:
        query: Document = {"subscription_id": subscription_id}
        if status:
            query["status"] = status.value
        cursor = self._deliveries.find(query, DELIVERY_PROJECTION).sort("created_at", DESCENDING)
        return [delivery_entry(doc) for doc in await cursor.limit(limit).to_list()]

    async def due_delivery_ids(
        self, now: datetime, subscription_ids: list[str], limit: int
    ) -> list[str]:
        """Due deliveries of the given (active) subscriptions, oldest first.

        Deliveries of paused or disabled subscriptions are simply not due: no write is needed
        to hold them, and resuming makes them due again at once.
        """
        if not subscription_ids:
            return []
        cursor = self._deliveries.find(
            {
                "status": {"$in": [s.value for s in DUE_STATUSES]},
                "next_attempt_at": {"$lte": now},
                "subscription_id": {"$in": subscription_ids},
            },
            {"_id": 1},
        ).sort("next_attempt_at", ASCENDING)
        return [str(doc["_id"]) for doc in await cursor.limit(limit).to_list()]

    async def forget_deliveries(self, subscription_id: str) -> int:
        """Drop a deleted subscription's deliveries (nothing will send them any more)."""
        result = await self._deliveries.delete_many({"subscription_id": subscription_id})
        return int(result.deleted_count)


class SubscriptionDirectory:
    """The subscriptions that record events (active or paused), cached for ``ttl`` seconds.

    Writes through this process's API call ``invalidate()``, so one replica is always exact;
    another replica sees a change within ``ttl`` (0 = query for every event).
    """

    def __init__(
        self,
        collection: Collection,
        *,
        ttl: float,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self._collection = collection
        self._ttl = ttl
        self._monotonic = monotonic or _monotonic
        self._cached: list[Subscription] | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        # Bumped by every invalidate(): a read that began before a write must not be cached
        # after it, or the fan-out would skip the new subscription for a whole ``ttl``.
        self._generation = 0

    def invalidate(self) -> None:
        self._cached = None
        self._generation += 1

    async def recording(self) -> list[Subscription]:
        async with self._lock:
            fresh = self._monotonic() - self._loaded_at < self._ttl
            if self._cached is not None and fresh:
                return self._cached
            while True:
                generation = self._generation
                cursor = self._collection.find(
                    {"status": {"$in": [s.value for s in RECORDING_STATUSES]}},
                    SUBSCRIPTION_PROJECTION,
                )
                docs = await cursor.to_list()
                if generation == self._generation:
                    break
            self._cached = [subscription_from_state(str(d["_id"]), d) for d in docs]
            self._loaded_at = self._monotonic()
            return self._cached

    async def active_ids(self) -> list[str]:
        return [
            s.subscription_id
            for s in await self.recording()
            if s.status is SubscriptionStatus.ACTIVE
        ]


def _monotonic() -> float:
    return asyncio.get_running_loop().time()
