"""Collections of the orders service and the read queries the use cases need.

Orders and contact timelines are aggregates written through ``VersionedDocumentStore`` (state,
outbox and applied message ids in one document). The duty roster is reference data without
events: one document replaced whole, so a PUT is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from kefu_shared.mongo import Collection, IndexSpec
from pymongo import ASCENDING

from kefu_orders.domain.order import Order, OrderStatus
from kefu_orders.domain.roster import DutyRoster

ORDERS = "orders"
TIMELINES = "contact_timelines"
SETTINGS = "reference_data"
ROSTER_ID = "duty_roster"

INDEXES = [
    IndexSpec(ORDERS, [("next_due_at", ASCENDING)], name="next_due_at"),
    IndexSpec(ORDERS, [("customer_id", ASCENDING), ("status", ASCENDING)], name="customer_status"),
]

ATTRIBUTABLE = [
    OrderStatus.PLACED.value,
    OrderStatus.PAID.value,
    OrderStatus.SHIPPED.value,
    OrderStatus.DELIVERED.value,
    OrderStatus.EXPIRED.value,
]
_RESERVED = ("_id", "version", "outbox", "outbox_pending", "applied")


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _RESERVED}


class OrderQueries:
    """Read side over the orders collection (writes go through the store).

    ``open_sealed`` turns a stored document into plain values (sealed personal fields decrypted).
    """

    def __init__(
        self,
        collection: Collection,
        open_sealed: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    ) -> None:
        self._c = collection
        self._open = open_sealed

    def _order(self, doc: dict[str, Any]) -> Order:
        return Order.from_state(self._open(_strip(doc)))

    async def get(self, order_id: str) -> Order | None:
        doc = await self._c.find_one({"_id": order_id})
        return self._order(doc) if doc else None

    async def due(self, now: datetime, limit: int = 200) -> list[str]:
        cursor = self._c.find({"next_due_at": {"$lte": now}}, {"_id": 1})
        return [str(d["_id"]) for d in await cursor.limit(limit).to_list()]

    async def of_customer(self, customer_id: str, limit: int = 100) -> list[str]:
        """Orders whose attribution or lost check may still depend on new evidence."""
        cursor = self._c.find(
            {"customer_id": customer_id, "status": {"$in": ATTRIBUTABLE}}, {"_id": 1}
        )
        return [str(d["_id"]) for d in await cursor.limit(limit).to_list()]

    async def search(
        self, *, customer_id: str | None, status: str | None, limit: int
    ) -> list[Order]:
        query: dict[str, Any] = {}
        if customer_id:
            query["customer_id"] = customer_id
        if status:
            query["status"] = status
        cursor = self._c.find(query).sort("placed_at", -1)
        return [self._order(d) for d in await cursor.limit(limit).to_list()]


class RosterStore:
    """The duty roster in force: the last PUT, else the packaged default."""

    def __init__(self, collection: Collection, default: DutyRoster) -> None:
        self._c = collection
        self._default = default

    async def current(self) -> DutyRoster:
        doc = await self._c.find_one({"_id": ROSTER_ID})
        if doc is None:
            return self._default
        return DutyRoster.model_validate(doc["roster"])

    async def replace(self, roster: DutyRoster, *, by: str, at: datetime) -> None:
        await self._c.replace_one(
            {"_id": ROSTER_ID},
            {"roster": roster.model_dump(mode="json"), "updated_by": by, "updated_at": at},
            upsert=True,
        )
