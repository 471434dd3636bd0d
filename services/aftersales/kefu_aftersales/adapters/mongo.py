"""Documents and queries: cases, the order projection, line claims, inquiries awaiting their
classification. Writes go through ``VersionedDocumentStore``; the reads here are plain queries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.mongo import Collection, Document, IndexSpec
from pymongo import ASCENDING, DESCENDING

from kefu_aftersales.domain.case import Case
from kefu_aftersales.domain.orders import OrderLine, OrderSnapshot

CASES = "cases"
ORDERS = "orders"
CLAIMS = "line_claims"
INQUIRIES = "inquiries"

INDEXES = [
    # The timer scan: cases whose earliest timer is due.
    IndexSpec(CASES, [("next_timer_at", ASCENDING)], name="timers"),
    IndexSpec(CASES, [("customer_id", ASCENDING), ("opened_at", DESCENDING)], name="by_customer"),
    IndexSpec(CASES, [("order_id", ASCENDING)], name="by_order"),
    IndexSpec(CASES, [("state", ASCENDING), ("opened_at", DESCENDING)], name="by_state"),
]


# -- the order projection -----------------------------------------------------------------------


def order_status(event: CommerceOrderEvent) -> str:
    """From the timestamps, not the event kind: a ``modified`` or ``refunded`` event does not
    change how far the parcel got, and every event carries the whole order."""
    if event.cancelled_at is not None:
        return "cancelled"
    if event.delivered_at is not None:
        return "delivered"
    if event.shipped_at is not None:
        return "shipped"
    if event.paid_at is not None:
        return "paid"
    return "placed"


def order_to_state(event: CommerceOrderEvent) -> Document:
    return {
        "customer_id": event.customer_id,
        "status": order_status(event),
        "lines": [
            {
                "sku": line.sku,
                "category": line.category.lower(),
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
            }
            for line in event.lines
        ],
        "currency": event.currency,
        "delivered_at": event.delivered_at,
        "contact": event.contact.model_dump(exclude_none=True),
        "language": event.language,
        "channel": event.channel.value,
        "last_event": event.kind.value,
        "event_at": event.moment(),
    }


def order_from_state(order_id: str, s: Document) -> OrderSnapshot:
    contact = s.get("contact") or {}
    return OrderSnapshot(
        order_id=order_id,
        customer_id=s["customer_id"],
        status=s["status"],
        lines=tuple(
            OrderLine(
                sku=ln["sku"],
                category=ln.get("category", ""),
                quantity=int(ln["quantity"]),
                unit_price_cents=int(ln["unit_price_cents"]),
            )
            for ln in s.get("lines", ())
        ),
        currency=s.get("currency", "CNY"),
        delivered_at=s.get("delivered_at"),
        contact=dict(contact),
        language=s.get("language"),
        channel=s.get("channel"),
    )


# -- case queries -------------------------------------------------------------------------------

VIEW_PROJECTION = {"outbox": 0, "applied": 0, "outbox_pending": 0}


# Free text of a marketplace review case, purged after KEFU_AFTERSALES_REVIEW_RETENTION_DAYS.
REVIEW_TEXTS = ("review.text", "review.reply", "review.explanation")


class CaseQueries:
    """Read side over the cases; ``open_sealed`` decrypts the sealed personal fields."""

    def __init__(
        self,
        cases: Collection,
        open_sealed: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    ) -> None:
        self._cases = cases
        self._open = open_sealed

    def _case(self, doc: Document) -> Case:
        return Case.from_state(self._open(_state(doc)))

    async def get(self, case_id: str) -> Case | None:
        doc = await self._cases.find_one({"_id": case_id}, VIEW_PROJECTION)
        return self._case(doc) if doc else None

    async def search(
        self,
        *,
        customer_id: str | None,
        order_id: str | None,
        state: str | None,
        kind: str | None,
        limit: int,
    ) -> list[Case]:
        query: Document = {}
        for name, value in (
            ("customer_id", customer_id),
            ("order_id", order_id),
            ("state", state),
            ("kind", kind),
        ):
            if value:
                query[name] = value
        cursor = self._cases.find(query, VIEW_PROJECTION).sort("opened_at", DESCENDING)
        return [self._case(d) for d in await cursor.limit(limit).to_list()]

    async def due(self, now: datetime, limit: int) -> list[str]:
        cursor = self._cases.find({"next_timer_at": {"$lte": now}}, {"_id": 1}).sort(
            "next_timer_at", ASCENDING
        )
        return [str(d["_id"]) for d in await cursor.limit(limit).to_list()]

    async def refunded_quantities(self, order_id: str) -> dict[str, int]:
        """Per SKU, how much of the order was refunded through after-sales already."""
        cursor = self._cases.find(
            {"order_id": order_id, "refund": {"$ne": None}}, {"lines": 1, "refund": 1}
        )
        out: dict[str, int] = {}
        for doc in await cursor.to_list():
            if not doc.get("refund"):
                continue
            for line in doc.get("lines", ()):
                out[line["sku"]] = out.get(line["sku"], 0) + int(line["quantity"])
        return out


def _state(doc: Document) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("_id", "version", *VIEW_PROJECTION)}
