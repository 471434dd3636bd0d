"""The use cases with in-memory stores: idempotence, contradictions as poison, late evidence,
timers that keep going past a broken order, a change asked twice."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from kefu_orders import handlers
from kefu_orders.domain.changes import Actor, ChangeRequest, LineChange, Proof
from kefu_orders.handlers import Context
from kefu_shared.contracts.inquiry import InquiryAgentReplied
from kefu_shared.contracts.orders import ActorKind, CommerceOrderEvent
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.envelope import Envelope
from orders_fakes import InMemoryStore, fake_deps
from orders_testkit import T0, FakeClock, order_body, reply_envelope, step

CTX = Context()


def commerce(body: dict[str, Any]) -> CommerceOrderEvent:
    return CommerceOrderEvent.model_validate(body)


def published_types(store: InMemoryStore) -> list[str]:
    return [m.headers["ce_type"].split(".", 1)[1].rsplit(".v", 1)[0] for m in store.published]


async def test_the_same_envelope_twice_is_applied_once_and_a_repeated_step_is_stale() -> None:
    deps = fake_deps(FakeClock())
    placed = commerce(order_body(order_id="O-1"))
    first = await handlers.receive_commerce_event(placed, message_id="m1", deps=deps, ctx=CTX)
    again = await handlers.receive_commerce_event(placed, message_id="m1", deps=deps, ctx=CTX)
    repeat = await handlers.receive_commerce_event(placed, message_id="m2", deps=deps, ctx=CTX)
    assert (first, again, repeat) == ("first_seen", "duplicate", "stale")
    assert published_types(deps.orders) == ["order.reviewed", "order.courier_assigned"]  # type: ignore[arg-type]


async def test_a_step_that_contradicts_the_order_is_poison_and_changes_nothing() -> None:
    deps = fake_deps(FakeClock())
    body = order_body(order_id="O-1")
    await handlers.receive_commerce_event(commerce(body), message_id="m1", deps=deps, ctx=CTX)
    before = await deps.orders.load("O-1")
    refund = step(body, "refunded", refund_id="R1", refund_amount_cents=100, refunded_at=T0)
    with pytest.raises(PoisonMessage, match="never paid"):
        await handlers.receive_commerce_event(commerce(refund), message_id="m2", deps=deps, ctx=CTX)
    assert await deps.orders.load("O-1") == before


async def test_a_reply_arriving_after_payment_still_credits_the_agent_who_talked_before() -> None:
    deps = fake_deps(FakeClock())
    body = order_body(order_id="O-1", customer_id="c-1")
    paid = step(body, "paid", paid_at=T0 + timedelta(minutes=20))
    for i, event in enumerate((body, paid)):
        await handlers.receive_commerce_event(
            commerce(event), message_id=f"m{i}", deps=deps, ctx=CTX
        )
    order = await deps.queries.get("O-1")
    assert order is not None
    assert order.attribution is not None
    assert order.attribution.agent_id is None  # nothing known yet

    late = Envelope[dict[str, Any]].model_validate_json(
        reply_envelope("c-1", "agent-4", T0 - timedelta(minutes=10))
    )
    assert await handlers.record_inquiry_event(late, deps) == "recorded"
    assert await handlers.record_inquiry_event(late, deps) == "duplicate"
    order = await deps.queries.get("O-1")
    assert order is not None
    assert order.attribution is not None
    assert (order.attribution.agent_id, order.attribution.rule.value) == (
        "agent-4",
        "consulted_before_placing",
    )
    assert order.attribution.revision == 2
    assert published_types(deps.orders).count("order.attributed") == 2  # type: ignore[arg-type]


async def test_inquiry_events_other_than_agent_replies_are_not_evidence() -> None:
    deps = fake_deps(FakeClock())
    data = json.loads(reply_envelope("c-1", "agent-4", T0))
    data["type"] = "inquiry.assigned"
    envelope = Envelope[dict[str, Any]].model_validate(data)
    assert await handlers.record_inquiry_event(envelope, deps) == "ignored"
    assert await deps.timelines.load("c-1") is None
    assert InquiryAgentReplied.event_type == "inquiry.agent_replied"


async def test_the_timer_scan_goes_on_past_an_order_it_cannot_read() -> None:
    clock = FakeClock()
    deps = fake_deps(clock)
    for order_id in ("O-1", "O-2"):
        body = order_body(order_id=order_id)
        await handlers.receive_commerce_event(
            commerce(body), message_id=order_id, deps=deps, ctx=CTX
        )
    broken = deps.orders.docs["O-1"]  # type: ignore[attr-defined]
    broken.state["timers"] = "not a list"
    clock.advance(minutes=11)
    fired = await handlers.fire_due_timers(deps)
    assert fired == 1
    order = await deps.queries.get("O-2")
    assert order is not None
    assert order.timers[0].outcome == "fired"


async def test_a_change_asked_twice_under_one_change_id_is_applied_once() -> None:
    deps = fake_deps(FakeClock())
    body = order_body(order_id="O-1")
    await handlers.receive_commerce_event(commerce(body), message_id="m1", deps=deps, ctx=CTX)
    proof = Proof("order_details", receiver="王芳", phone="13812345678")
    for _ in range(2):
        outcome, order = await handlers.change_order(
            "O-1",
            change_id="chg-1",
            request=ChangeRequest(lines=[LineChange("JZ-1983", 7)]),
            proof=proof,
            actor=Actor(ActorKind.AGENT, "agent-1"),
            deps=deps,
            ctx=CTX,
        )
        assert outcome == "changed"
    assert len(order.changes) == 1
    assert published_types(deps.orders).count("order.changed") == 1  # type: ignore[arg-type]
    with pytest.raises(handlers.NotFound):
        await handlers.request_verification("O-404", Actor(ActorKind.AGENT, "a"), deps, CTX)
