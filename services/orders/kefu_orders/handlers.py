"""Use cases: each loads the evidence it needs, lets the domain decide, and stores the decision
with its events and notification requests in one document write (the outbox)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kefu_shared import topics
from kefu_shared.contracts.inquiry import InquiryAgentReplied
from kefu_shared.contracts.orders import (
    ActorKind,
    CommerceOrderEvent,
    OrderAttributed,
    OrderAttributionRevoked,
    OrderCourierAssigned,
    OrderEvent,
    OrderExpired,
    OrderFollowUpClosed,
    OrderLossRecovered,
    OrderLost,
    OrderNoCourierCoverage,
    OrderPaymentReminderDue,
    OrderReviewed,
    OrderShippingNoticeDue,
)
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, new_id, utcnow
from kefu_shared.outbox import OutboxMessage
from pymongo.errors import ConnectionFailure

from kefu_orders.adapters.metrics import OrdersMetrics
from kefu_orders.adapters.mongo import OrderQueries, RosterStore
from kefu_orders.adapters.notifications import notification_request
from kefu_orders.domain import changes as change_rules
from kefu_orders.domain import order as domain
from kefu_orders.domain.attribution import Contact
from kefu_orders.domain.changes import Actor, ChangeRequest, Proof
from kefu_orders.domain.contacts import ContactRecord, Timeline, add_contact
from kefu_orders.domain.order import Decision, Order, Rejected, Rules, ms
from kefu_orders.domain.roster import DutyRoster

log = logging.getLogger(__name__)
SOURCE = "orders"


def six_digit_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


@dataclass
class Deps:
    orders: VersionedDocumentStore
    timelines: VersionedDocumentStore
    queries: OrderQueries
    roster: RosterStore
    rules: Rules
    metrics: OrdersMetrics
    topic: Callable[[str], str]
    retention: timedelta = timedelta(days=45)
    clock: Callable[[], datetime] = utcnow
    new_code: Callable[[], str] = field(default=six_digit_code)

    def now(self) -> datetime:
        return ms(self.clock())


@dataclass(frozen=True)
class Context:
    """Where a command came from, for the events' correlation and causation ids."""

    correlation_id: str | None = None
    causation_id: str | None = None


class NotFound(Exception):
    pass


def _event_id(event: OrderEvent) -> str | None:
    # Timer events get ids of their own making: if two scanners ever fired the same timer,
    # consumers would still see one event.
    if isinstance(event, OrderPaymentReminderDue):
        return f"{event.order_id}:payment_reminder_due:{event.reminder.value}"
    if isinstance(event, OrderLost):
        return f"{event.order_id}:lost"
    if isinstance(event, OrderExpired):
        return f"{event.order_id}:expired"
    return None


def _change(decision: Decision, deps: Deps, ctx: Context) -> Change:
    out: list[OutboxMessage] = []
    for event in decision.events:
        envelope = Envelope.wrap(
            event,
            source=SOURCE,
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
            time=event.occurred_at,
            event_id=_event_id(event),
        )
        out.append(OutboxMessage.from_envelope(envelope, deps.topic(topics.ORDERS_EVENTS)))
    for notice in decision.notices:
        request = notification_request(decision.order, notice)
        envelope = Envelope.wrap(
            request, source=SOURCE, correlation_id=ctx.correlation_id, causation_id=ctx.causation_id
        )
        out.append(OutboxMessage.from_envelope(envelope, deps.topic(topics.NOTIFICATION_REQUESTS)))
    decision.order.updated_at = deps.now()
    return Change(decision.order.to_state(), out)


def _order(stored: Stored | None) -> Order | None:
    return Order.from_state(stored.state) if stored else None


def _count(events: list[OrderEvent], deps: Deps) -> None:
    m = deps.metrics
    for event in events:
        if isinstance(event, OrderReviewed):
            m.reviewed.labels(event.channel.value, event.outcome.value).inc()
        elif isinstance(event, OrderCourierAssigned):
            m.courier.labels("assigned").inc()
        elif isinstance(event, OrderNoCourierCoverage):
            m.courier.labels("no_coverage").inc()
        elif isinstance(event, OrderPaymentReminderDue):
            m.follow_up.labels(f"{event.reminder.value}_reminder").inc()
        elif isinstance(event, OrderLost):
            m.follow_up.labels("lost").inc()
        elif isinstance(event, OrderLossRecovered):
            m.follow_up.labels("loss_recovered").inc()
        elif isinstance(event, OrderExpired):
            m.follow_up.labels("expired").inc()
        elif isinstance(event, OrderShippingNoticeDue):
            m.shipping_notices.labels(event.channel.value).inc()
        elif isinstance(event, OrderAttributed):
            m.attributions.labels(event.rule.value, str(event.agent_id is not None).lower()).inc()
        elif isinstance(event, OrderAttributionRevoked):
            m.revoked.labels(event.reason).inc()
        elif isinstance(event, OrderFollowUpClosed):
            pass


async def evidence(customer_id: str, deps: Deps) -> list[Contact]:
    stored = await deps.timelines.load(customer_id)
    return Timeline.from_state(stored.state).evidence() if stored else []


# -- the commerce platform's lifecycle ----------------------------------------------------------


async def receive_commerce_event(
    event: CommerceOrderEvent, *, message_id: str, deps: Deps, ctx: Context
) -> str:
    """Apply one lifecycle step. Returns first_seen, applied, stale or duplicate; a step that
    contradicts the order raises ``PoisonMessage`` (dead-lettered with the reason)."""
    now = deps.now()
    contacts = await evidence(event.customer_id, deps)
    roster = await deps.roster.current()
    kind = event.kind.value
    decided: dict[str, Any] = {}

    def decide(stored: Stored | None) -> Change | None:
        current = _order(stored)
        if current is None:
            decision = domain.first_seen(event, deps.rules, roster, contacts, now)
            decided["outcome"] = "first_seen"
        else:
            if current.customer_id != event.customer_id:
                raise Rejected(f"customer_id: order {event.order_id} belongs to another customer")
            found = domain.apply(
                current, event, deps.rules, contacts, now, change_id=f"platform:{message_id}"
            )
            if found is None:
                decided["outcome"] = "stale"
                return None
            decision = found
            decided["outcome"] = "applied"
        decided["events"] = decision.events
        return _change(decision, deps, ctx)

    try:
        outcome = await deps.orders.mutate(event.order_id, decide, message_id=message_id)
    except Rejected as exc:
        deps.metrics.commerce_events.labels(kind, "rejected").inc()
        raise PoisonMessage(str(exc)) from exc
    if outcome.duplicate:
        deps.metrics.commerce_events.labels(kind, "duplicate").inc()
        return "duplicate"
    result = str(decided.get("outcome", "stale"))
    deps.metrics.commerce_events.labels(kind, result).inc()
    if outcome.changed:
        _count(decided.get("events", []), deps)
    return result


# -- evidence of contact ------------------------------------------------------------------------


async def record_inquiry_event(envelope: Envelope[dict[str, Any]], deps: Deps) -> str:
    """An inquiry event: an agent's reply is evidence that the agent talked to the customer.
    Other inquiry events are not evidence and are ignored."""
    if envelope.type != InquiryAgentReplied.event_type:
        return "ignored"
    reply = envelope.payload(InquiryAgentReplied)
    record = ContactRecord(
        agent_id=reply.agent_id,
        at=ms(reply.occurred_at),
        conversation=reply.inquiry_id,
        channel=reply.channel.value,
        category=reply.category.value if reply.category else None,
        source="inquiry",
    )
    ctx = Context(correlation_id=envelope.correlation_id, causation_id=envelope.id)
    return await add_evidence(reply.customer_id, record, message_id=envelope.id, deps=deps, ctx=ctx)


async def add_evidence(
    customer_id: str, record: ContactRecord, *, message_id: str, deps: Deps, ctx: Context
) -> str:
    now = deps.now()

    def decide(stored: Stored | None) -> Change | None:
        current = Timeline.from_state(stored.state) if stored else None
        updated = add_contact(current, customer_id, record, retention=deps.retention, now=now)
        return Change(updated.to_state()) if updated else None

    outcome = await deps.timelines.mutate(customer_id, decide, message_id=message_id)
    if outcome.changed:
        deps.metrics.contacts.labels(record.source).inc()
    # Also after a duplicate: a crash may have come between the timeline and the orders.
    await reattribute_customer(customer_id, deps, ctx)
    return "recorded" if outcome.changed else "duplicate"


async def reattribute_customer(customer_id: str, deps: Deps, ctx: Context) -> int:
    """New evidence may change who gets the customer's paid orders."""
    contacts = await evidence(customer_id, deps)
    now = deps.now()
    changed = 0
    for order_id in await deps.queries.of_customer(customer_id):
        captured: dict[str, list[OrderEvent]] = {}

        def decide(
            stored: Stored | None, captured: dict[str, list[OrderEvent]] = captured
        ) -> Change | None:
            current = _order(stored)
            if current is None:
                return None
            events = domain.reattribute(current, deps.rules, contacts, now)
            if not events:
                return None
            captured["events"] = events
            return _change(Decision(current, events), deps, ctx)

        outcome = await deps.orders.mutate(order_id, decide)
        if outcome.changed:
            changed += 1
            _count(captured.get("events", []), deps)
    return changed


# -- timers -------------------------------------------------------------------------------------


async def fire_due_timers(deps: Deps) -> int:
    """Reminders, lost checks and expiries whose time has come; run by the background loop.
    The flags in the order make each fire once, also after a restart (late, not never)."""
    now = deps.now()
    fired = 0
    for order_id in await deps.queries.due(now):
        try:
            fired += await _fire_order(order_id, now, deps)
        except (ConnectionFailure, asyncio.CancelledError):
            raise
        except Exception:
            # One broken order must not hold back every other order's timers.
            log.exception("timers of order %s failed; retried at the next scan", order_id)
    return fired


async def _fire_order(order_id: str, now: datetime, deps: Deps) -> int:
    order = await deps.queries.get(order_id)
    if order is None:
        return 0
    contacts = await evidence(order.customer_id, deps)
    captured: dict[str, list[OrderEvent]] = {}

    def decide(stored: Stored | None) -> Change | None:
        current = _order(stored)
        if current is None:
            return None
        decision = domain.fire_due(current, deps.rules, contacts, now)
        if decision is None:
            return None
        captured["events"] = decision.events
        return _change(decision, deps, Context())

    outcome = await deps.orders.mutate(order_id, decide)
    if not outcome.changed:
        return 0
    events = captured.get("events", [])
    _count(events, deps)
    return len(events)


# -- verified changes ---------------------------------------------------------------------------


async def request_verification(
    order_id: str, actor: Actor, deps: Deps, ctx: Context
) -> tuple[str, datetime]:
    """Send the customer a one-time code; returns the verification id and its expiry."""
    now = deps.now()
    verification_id = new_id()
    code = deps.new_code()

    def decide(stored: Stored | None) -> Change | None:
        current = _order(stored)
        if current is None:
            raise NotFound(f"order_id: no order {order_id}")
        decision = change_rules.request_code(
            current,
            verification_id=verification_id,
            code=code,
            actor=actor,
            rules=deps.rules,
            now=now,
        )
        return _change(decision, deps, ctx)

    await deps.orders.mutate(order_id, decide)
    return verification_id, now + deps.rules.verification.code_valid


async def change_order(
    order_id: str,
    *,
    change_id: str,
    request: ChangeRequest,
    proof: Proof,
    actor: Actor,
    deps: Deps,
    ctx: Context,
) -> tuple[str, Order]:
    """A verified change. Returns the outcome (changed, verification_failed, refused) and the
    order; raises ``domain.Invalid`` for a request wrong in itself and ``NotFound``."""
    now = deps.now()
    stored_order = await deps.queries.get(order_id)
    if stored_order is None:
        raise NotFound(f"order_id: no order {order_id}")
    contacts = await evidence(stored_order.customer_id, deps)
    decided: dict[str, Any] = {}

    def decide(stored: Stored | None) -> Change | None:
        current = _order(stored)
        if current is None:
            raise NotFound(f"order_id: no order {order_id}")
        if any(c.change_id == change_id for c in current.changes):
            decided["outcome"] = "changed"  # the same change asked again: already done
            return None
        decision = change_rules.change_order(
            current,
            change_id=change_id,
            request=request,
            proof=proof,
            actor=actor,
            rules=deps.rules,
            contacts=contacts,
            now=now,
        )
        decided["outcome"] = decision.outcome
        decided["events"] = decision.events
        return _change(decision, deps, ctx)

    outcome = await deps.orders.mutate(order_id, decide)
    result = str(decided["outcome"])
    deps.metrics.changes.labels(result).inc()
    if outcome.changed:
        _count(decided.get("events", []), deps)
    order = _order(outcome.stored)
    assert order is not None
    return result, order


# -- contacts agents record, the duty roster ----------------------------------------------------


async def record_contact(
    customer_id: str,
    record: ContactRecord,
    *,
    contact_id: str,
    deps: Deps,
    ctx: Context,
) -> str:
    return await add_evidence(customer_id, record, message_id=contact_id, deps=deps, ctx=ctx)


async def put_roster(roster: DutyRoster, *, by: str, deps: Deps) -> DutyRoster:
    await deps.roster.replace(roster, by=by, at=deps.now())
    return roster


def actor_of(role_is_staff: bool, subject: str) -> Actor:
    """Staff act as agents under their own id; a service (the shop's front end) acts for the
    customer whose order it is."""
    if role_is_staff:
        return Actor(ActorKind.AGENT, subject)
    return Actor(ActorKind.CUSTOMER, None)
