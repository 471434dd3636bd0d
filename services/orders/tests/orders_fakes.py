"""In-memory stand-ins for the stores, for use-case tests without servers."""

from __future__ import annotations

import copy
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from kefu_orders.adapters import tables
from kefu_orders.adapters.metrics import OrdersMetrics
from kefu_orders.domain.order import Order, OrderStatus, Rules
from kefu_orders.domain.roster import DutyRoster
from kefu_orders.handlers import Deps
from kefu_shared.documents import Change, Outcome, Stored
from kefu_shared.outbox import OutboxMessage
from prometheus_client import CollectorRegistry


class InMemoryStore:
    """``VersionedDocumentStore``'s contract: decide, write, outbox, applied message ids."""

    def __init__(self) -> None:
        self.docs: dict[str, Stored] = {}
        self.published: list[OutboxMessage] = []

    async def load(self, doc_id: str) -> Stored | None:
        return copy.deepcopy(self.docs.get(doc_id))

    async def mutate(self, doc_id: str, decide: Any, *, message_id: str | None = None) -> Outcome:
        current = await self.load(doc_id)
        if current is not None and message_id is not None and message_id in current.applied:
            return Outcome(stored=current, duplicate=True)
        result = decide(current)
        change: Change | None = await result if isinstance(result, Awaitable) else result
        if change is None:
            return Outcome(stored=current)
        applied = (*(current.applied if current else ()), *([message_id] if message_id else ()))
        stored = Stored(
            doc_id, copy.deepcopy(change.state), (current.version if current else 0) + 1, applied
        )
        self.docs[doc_id] = stored
        self.published += change.events
        return Outcome(stored=stored, changed=True, events=list(change.events))


class InMemoryQueries:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    def _orders(self) -> list[Order]:
        return [Order.from_state(s.state) for s in self._store.docs.values()]

    async def get(self, order_id: str) -> Order | None:
        stored = self._store.docs.get(order_id)
        return Order.from_state(stored.state) if stored else None

    async def due(self, now: datetime, limit: int = 200) -> list[str]:
        due = [k for k, s in self._store.docs.items() if (s.state.get("next_due_at") or now) <= now]
        return [k for k in due if self._store.docs[k].state.get("next_due_at")][:limit]

    async def of_customer(self, customer_id: str, limit: int = 100) -> list[str]:
        open_ = {OrderStatus.PLACED, OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.DELIVERED}
        return [o.id for o in self._orders() if o.customer_id == customer_id and o.status in open_]


class FixedRoster:
    def __init__(self, roster: DutyRoster) -> None:
        self.roster = roster

    async def current(self) -> DutyRoster:
        return self.roster


def fake_deps(clock: Any) -> Deps:
    orders = InMemoryStore()
    return Deps(
        orders=orders,  # type: ignore[arg-type]
        timelines=InMemoryStore(),  # type: ignore[arg-type]
        queries=InMemoryQueries(orders),  # type: ignore[arg-type]
        roster=FixedRoster(tables.duty_roster()),  # type: ignore[arg-type]
        rules=Rules(couriers=tables.coverage_table(), notes=tables.note_format()),
        metrics=OrdersMetrics(CollectorRegistry()),
        topic=lambda name: name,
        clock=clock,
        new_code=lambda: "135790",
    )
