"""Use cases with in-memory stores: what they check, store and publish, without servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kefu_aftersales import handlers
from kefu_aftersales.adapters.metrics import AftersalesMetrics
from kefu_aftersales.adapters.mongo import order_to_state
from kefu_aftersales.domain.case import Case, DomainError
from kefu_aftersales.domain.flows import load_flows
from kefu_aftersales.domain.inference import load_inferrer
from kefu_aftersales.domain.orders import RequestedLine
from kefu_aftersales.domain.policy import load_policy
from kefu_shared.contracts.aftersales import CaseKind, CaseState, RequestReason
from kefu_shared.contracts.inquiry import InquiryClassified
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.documents import Change, Outcome, Stored
from kefu_shared.topics import Channel
from prometheus_client import CollectorRegistry

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class FakeCollection:
    def __init__(self, docs: dict[str, Stored]) -> None:
        self._docs = docs

    async def delete_one(self, query: dict[str, Any]) -> None:
        self._docs.pop(query["_id"], None)


class FakeStore:
    """VersionedDocumentStore's contract in memory: load, mutate once per message id."""

    def __init__(self) -> None:
        self.docs: dict[str, Stored] = {}
        self.collection = FakeCollection(self.docs)
        self.published: list[Any] = []
        self._lock = asyncio.Lock()

    async def load(self, doc_id: str) -> Stored | None:
        return self.docs.get(doc_id)

    async def mutate(self, doc_id: str, decide: Any, *, message_id: str | None = None) -> Outcome:
        async with self._lock:
            current = self.docs.get(doc_id)
            if current and message_id and message_id in current.applied:
                return Outcome(stored=current, duplicate=True)
            result = decide(current)
            change: Change | None = await result if isinstance(result, Awaitable) else result
            if change is None:
                return Outcome(stored=current)
            applied = (*(current.applied if current else ()), *([message_id] if message_id else []))
            stored = Stored(doc_id, change.state, (current.version if current else 0) + 1, applied)
            self.docs[doc_id] = stored
            self.published.extend(change.events)
            return Outcome(stored=stored, changed=True, events=list(change.events))


class FakeQueries:
    def __init__(self, cases: FakeStore) -> None:
        self._cases = cases

    def _all(self) -> list[Case]:
        return [Case.from_state(s.state) for s in self._cases.docs.values()]

    async def due(self, now: datetime, limit: int) -> list[str]:
        return [c.id for c in self._all() if c.next_timer_at and c.next_timer_at <= now][:limit]

    async def refunded_quantities(self, order_id: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for case in self._all():
            if case.order_id == order_id and case.refund:
                for line in case.lines:
                    out[line.sku] = out.get(line.sku, 0) + line.quantity
        return out


class FakeAudit:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def record(self, **entry: Any) -> None:
        self.entries.append(entry)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deps(clock: Clock) -> handlers.Deps:
    cases = FakeStore()
    return handlers.Deps(
        cases=cases,  # type: ignore[arg-type]
        orders=FakeStore(),  # type: ignore[arg-type]
        claims=FakeStore(),  # type: ignore[arg-type]
        inquiries=FakeStore(),  # type: ignore[arg-type]
        queries=FakeQueries(cases),  # type: ignore[arg-type]
        audit=FakeAudit(),  # type: ignore[arg-type]
        policy=load_policy(),
        flows=load_flows(),
        inferrer=load_inferrer(),
        metrics=AftersalesMetrics(CollectorRegistry()),
        topic=lambda name: name,
        clock=clock,
        stale_claim=timedelta(seconds=60),
    )


async def add_order(deps: handlers.Deps, order_id: str = "O-1") -> None:
    event = CommerceOrderEvent.model_validate(
        {
            "kind": "delivered",
            "order_id": order_id,
            "customer_id": "cust-1",
            "channel": "web",
            "lines": [
                {
                    "sku": "TEA-1",
                    "name": "tea",
                    "category": "food",
                    "quantity": 3,
                    "unit_price_cents": 8_800,
                    "catalogue_unit_price_cents": 8_800,
                },
            ],
            "total_cents": 26_400,
            "placed_at": (T0 - timedelta(days=5)).isoformat(),
            "paid_at": (T0 - timedelta(days=5)).isoformat(),
            "shipped_at": (T0 - timedelta(days=4)).isoformat(),
            "carrier": "sf",
            "tracking_number": "SF1",
            "delivered_at": (T0 - timedelta(days=2)).isoformat(),
        }
    )
    await deps.orders.mutate(order_id, lambda _: Change(order_to_state(event)))


def command(**extra: Any) -> handlers.RequestCommand:
    values: dict[str, Any] = {
        "customer_id": "cust-1",
        "order_id": "O-1",
        "kind": CaseKind.RETURN,
        "reason": RequestReason.QUALITY_PROBLEM,
        "lines": [RequestedLine("TEA-1", 1)],
        **extra,
    }
    return handlers.RequestCommand(**values)


def published_types(store: Any) -> list[str]:
    return [json.loads(m.body)["type"] for m in store.published]


async def test_a_request_is_reviewed_and_its_events_and_notices_go_to_the_outbox(
    deps: handlers.Deps,
) -> None:
    await add_order(deps)
    case, created = await handlers.open_case(command(), deps, handlers.Context())
    assert created
    assert case.state is CaseState.AWAITING_RETURN_PARCEL
    types = published_types(deps.cases)
    assert types.count("aftersales.state_changed") == 3
    assert types.count("notification.requested") == 3
    topics_used = {m.topic for m in deps.cases.published}  # type: ignore[attr-defined]
    assert topics_used == {"kefu.aftersales.events", "kefu.notifier.requests"}


async def test_every_problem_with_the_order_lines_is_reported_at_once(deps: handlers.Deps) -> None:
    await add_order(deps)
    lines = [RequestedLine("TEA-1", 4), RequestedLine("COFFEE", 1)]
    with pytest.raises(handlers.InvalidRequest) as refused:
        await handlers.open_case(command(lines=lines), deps, handlers.Context())
    assert [p.field for p in refused.value.problems] == ["lines.0.quantity", "lines.1.sku"]
    assert deps.cases.docs == {}  # type: ignore[attr-defined]


async def test_two_requests_for_one_line_at_the_same_time_open_one_case(
    deps: handlers.Deps,
) -> None:
    await add_order(deps)
    results = await asyncio.gather(
        handlers.open_case(command(request_id="a"), deps, handlers.Context()),
        handlers.open_case(command(request_id="b"), deps, handlers.Context()),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(refused) == 1
    assert refused[0].reason == "duplicate_case"
    assert len(deps.cases.docs) == 1  # type: ignore[attr-defined]


async def test_a_claim_left_by_a_crash_frees_the_line_after_a_while(
    deps: handlers.Deps, clock: Clock
) -> None:
    await add_order(deps)
    # A claim whose case was never written (the process died between the two writes).
    abandoned = {"claims": [{"sku": "TEA-1", "case_id": "AS-GHOST", "at": T0}]}
    await deps.claims.mutate("O-1", lambda _: Change(abandoned))
    with pytest.raises(DomainError, match="AS-GHOST"):
        await handlers.open_case(command(), deps, handlers.Context())
    clock.now = T0 + timedelta(seconds=61)
    case, created = await handlers.open_case(command(), deps, handlers.Context())
    assert created
    assert case.state is CaseState.AWAITING_RETURN_PARCEL


async def test_closing_a_case_frees_its_lines_for_a_new_case(deps: handlers.Deps) -> None:
    await add_order(deps)
    first, _ = await handlers.open_case(command(), deps, handlers.Context(actor_id="li"))
    await handlers.move_case(
        first.id, CaseState.CLOSED, handlers.StepDetails(), deps, handlers.Context()
    )
    second, created = await handlers.open_case(command(), deps, handlers.Context())
    assert created
    assert second.id != first.id


async def test_timers_fire_once_however_often_the_scanner_runs(
    deps: handlers.Deps, clock: Clock
) -> None:
    await add_order(deps)
    case, _ = await handlers.open_case(
        command(kind=CaseKind.REFUND_ONLY, reason=RequestReason.WRONG_ITEM),
        deps,
        handlers.Context(),
    )
    await handlers.move_case(
        case.id, CaseState.REFUNDED, handlers.StepDetails(), deps, handlers.Context()
    )
    assert await handlers.fire_due_timers(deps) == 0
    clock.now = T0 + timedelta(hours=73)
    assert await handlers.fire_due_timers(deps) == 1
    assert await handlers.fire_due_timers(deps) == 0
    assert published_types(deps.cases).count("aftersales.case_closed") == 1


async def test_an_inquiry_of_another_category_opens_nothing_and_its_text_is_not_kept(
    deps: handlers.Deps,
) -> None:
    await deps.inquiries.mutate("inq-9", lambda _: Change({"content": "快递到哪了"}))
    event = InquiryClassified(
        inquiry_id="inq-9",
        customer_id="cust-1",
        channel=Channel.CHAT,
        category="logistics",  # type: ignore[arg-type]
        occurred_at=T0,
        confidence=0.9,
        language="zh",
        needs_human=False,
    )
    assert await handlers.on_inquiry_classified(event, deps, handlers.Context()) is None
    assert deps.cases.docs == {}  # type: ignore[attr-defined]
    assert deps.inquiries.docs == {}  # type: ignore[attr-defined]
