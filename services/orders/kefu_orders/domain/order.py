"""The order aggregate: one order followed from placement to delivery on the service side.

Every transition is a pure function of the stored order, the input and ``now``, returning a
``Decision``: the new state, the ``order.*`` events other services see and the notices the
customer should get. The handlers store all three in one document write (the outbox), so a
crash loses either everything or nothing, and a redelivered input changes nothing.

Timers (payment reminders, the lost check, expiry) live in the order itself with their due
times; a background loop fires the due ones, each exactly once (``Timer.done``), also after a
restart (late rather than never).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from kefu_shared.contracts.orders import (
    ActorKind,
    AttributionRule,
    AttributionViolation,
    ChangeField,
    CommerceEventKind,
    CommerceOrderEvent,
    CustomerContact,
    DeliveryAddress,
    FollowUpClosedReason,
    OrderAttributed,
    OrderAttributionRevoked,
    OrderChanged,
    OrderCourierAssigned,
    OrderEvent,
    OrderExpired,
    OrderFollowUpClosed,
    OrderLine,
    OrderLossRecovered,
    OrderLost,
    OrderNoCourierCoverage,
    OrderPaymentReminderDue,
    OrderRefunded,
    OrderReviewed,
    OrderShippingNoticeDue,
    ReminderKind,
    ReviewOutcome,
    ReviewReason,
    SalesChannel,
)
from kefu_shared.pii import redact_card_numbers
from kefu_shared.topics import Channel
from pydantic import BaseModel, Field

from kefu_orders.domain.attribution import ChangeFact, Contact, attribute
from kefu_orders.domain.couriers import CoverageTable
from kefu_orders.domain.notes import EN, ZH, NoteFormat
from kefu_orders.domain.review import review
from kefu_orders.domain.roster import DutyRoster


class OrderStatus(StrEnum):
    PLACED = "placed"  # not paid yet: the unpaid follow-up runs
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # unpaid past the expiry time
    REFUNDED = "refunded"  # fully refunded


CHANGEABLE = frozenset({OrderStatus.PLACED, OrderStatus.PAID})
"""The handbook allows changes by the shop's rules, never after shipping."""


class TimerKind(StrEnum):
    FIRST_REMINDER = "first_reminder"
    LOST_CHECK = "lost_check"
    SECOND_REMINDER = "second_reminder"
    EXPIRY = "expiry"


class Rejected(Exception):
    """An input that can never apply to this order (dead-lettered, or HTTP 409)."""


class Invalid(Exception):
    """A command whose content is wrong whatever the order's state (HTTP 422); ``field`` names
    the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def ms(value: datetime) -> datetime:
    """Millisecond precision: what the store keeps, so comparisons agree before and after."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# -- policies and tables the transitions need ---------------------------------------------------


@dataclass(frozen=True)
class FollowUpPolicy:
    """The unpaid-order clock, counted from ``placed_at``."""

    first_reminder: timedelta = timedelta(minutes=10)
    lost_after: timedelta = timedelta(minutes=20)
    second_reminder: timedelta = timedelta(hours=2)
    expire_after: timedelta = timedelta(hours=24)
    evidence_grace: timedelta = timedelta(seconds=60)
    """The lost check waits this long after the mark for late inquiry events (another topic)."""


@dataclass(frozen=True)
class VerificationPolicy:
    code_valid: timedelta = timedelta(minutes=10)
    max_code_attempts: int = 3
    max_details_failures: int = 5


@dataclass(frozen=True)
class Rules:
    couriers: CoverageTable
    notes: NoteFormat
    note_language: str = ZH
    shop_timezone: str = "Asia/Shanghai"
    follow_up: FollowUpPolicy = field(default_factory=FollowUpPolicy)
    verification: VerificationPolicy = field(default_factory=VerificationPolicy)
    attribution_lookback: timedelta = timedelta(days=15)


# -- state ---------------------------------------------------------------------------------------


class Timer(BaseModel):
    kind: TimerKind
    due_at: datetime
    done: bool = False
    outcome: str = ""  # fired | skipped | contacted | cancelled


class Refund(BaseModel):
    refund_id: str
    amount_cents: int
    at: datetime


class ReviewState(BaseModel):
    outcome: ReviewOutcome
    reasons: list[ReviewReason] = Field(default_factory=list)
    note: str
    computed_total_cents: int
    revision: int


class CourierState(BaseModel):
    code: str
    name: str
    rank: int
    requested_by_customer: bool


class LostState(BaseModel):
    agent_id: str | None
    deadline_at: datetime
    declared_at: datetime
    recovered: bool = False


class RecordedChange(BaseModel):
    change_id: str
    at: datetime
    fields: list[ChangeField]
    substantive: bool
    sold_more: bool
    price_cut: bool
    actor_kind: ActorKind
    actor_id: str | None = None
    approved_by: str | None = None


class AttributionState(BaseModel):
    agent_id: str | None
    rule: AttributionRule
    revision: int
    decided_at: datetime
    inquiry_id: str | None = None
    contact_channel: str | None = None
    consulting_agent_ids: list[str] = Field(default_factory=list)
    violations: list[AttributionViolation] = Field(default_factory=list)
    revoked: bool = False


class Verification(BaseModel):
    verification_id: str
    code_hash: str
    expires_at: datetime
    requested_at: datetime
    requested_by: str | None = None
    failed_attempts: int = 0
    used: bool = False


class AuditRecord(BaseModel):
    """Who did what to the order, when, with the before and after (kept with the order)."""

    at: datetime
    action: str  # change | change_refused | verification_requested | verification_failed | ...
    actor_kind: ActorKind
    actor_id: str | None = None
    change_id: str | None = None
    detail: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class Order(BaseModel):
    id: str
    customer_id: str
    customer_name: str = ""
    channel: SalesChannel
    marketplace: str | None = None
    language: str = ZH
    contact: CustomerContact = Field(default_factory=CustomerContact)
    lines: list[OrderLine]
    currency: str = "CNY"
    discount_cents: int = 0
    shipping_fee_cents: int = 0
    total_cents: int
    address: DeliveryAddress = Field(default_factory=DeliveryAddress)
    buyer_note: str = ""
    requested_courier: str | None = None
    price_exception_approved_by: str | None = None

    status: OrderStatus = OrderStatus.PLACED
    placed_at: datetime
    paid_at: datetime | None = None
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    cancelled_at: datetime | None = None
    expired_at: datetime | None = None
    carrier: str | None = None
    carrier_name: str | None = None
    tracking_number: str | None = None
    refunds: list[Refund] = Field(default_factory=list)

    review: ReviewState | None = None
    courier: CourierState | None = None
    no_courier_coverage: bool = False
    on_duty_agent_id: str | None = None
    timers: list[Timer] = Field(default_factory=list)
    next_due_at: datetime | None = None
    lost: LostState | None = None
    follow_up_closed: bool = False
    changes: list[RecordedChange] = Field(default_factory=list)
    attribution: AttributionState | None = None
    verifications: list[Verification] = Field(default_factory=list)
    details_failures: int = 0
    audit: list[AuditRecord] = Field(default_factory=list)
    first_seen_as: CommerceEventKind = CommerceEventKind.PLACED
    created_at: datetime
    updated_at: datetime

    @property
    def refunded_cents(self) -> int:
        return sum(r.amount_cents for r in self.refunds)

    @property
    def customer_label(self) -> str:
        return self.customer_name.strip() or self.customer_id

    def to_state(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Order:
        return cls.model_validate(state)


@dataclass(frozen=True)
class Notice:
    """Something the customer must be told, for the notifier."""

    idempotency_key: str
    purpose: str
    template: str
    parameters: dict[str, Any]


@dataclass
class Decision:
    order: Order
    events: list[OrderEvent] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    outcome: str = "changed"


# -- helpers -------------------------------------------------------------------------------------


def event_base(order: Order, now: datetime) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "customer_id": order.customer_id,
        "channel": order.channel,
        "marketplace": order.marketplace,
        "occurred_at": now,
    }


def _language(value: str) -> str:
    return EN if value == EN else ZH


def money(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _cancel_timers(order: Order) -> None:
    for timer in order.timers:
        if not timer.done:
            timer.done = True
            timer.outcome = "cancelled"
    order.next_due_at = None


def _next_due(order: Order) -> datetime | None:
    pending = [t.due_at for t in order.timers if not t.done]
    return min(pending) if pending else None


def _close_follow_up(order: Order, reason: FollowUpClosedReason, now: datetime) -> list[OrderEvent]:
    _cancel_timers(order)
    if order.follow_up_closed:
        return []
    order.follow_up_closed = True
    return [OrderFollowUpClosed(**event_base(order, now), reason=reason)]


def agent_contacts(order: Order) -> list[Contact]:
    """Agents' changes of the order count as talking to the customer at that moment."""
    return [
        Contact(c.actor_id, c.at, f"change:{c.change_id}")
        for c in order.changes
        if c.actor_id and c.actor_kind in (ActorKind.AGENT, ActorKind.PLATFORM)
    ]


# -- review and courier --------------------------------------------------------------------------


def _review(
    order: Order, rules: Rules, now: datetime, *, address_changed: bool = False
) -> tuple[list[OrderEvent], list[Notice]]:
    """Courier coverage first (the note names the courier), then the review itself. Courier
    events go out when the outcome is new or the address moved."""
    events: list[OrderEvent] = []
    notices: list[Notice] = []
    courier_events: list[OrderEvent] = []
    address = order.address
    if address.province.strip() and address.city.strip():
        choice = rules.couriers.choose(
            address.province, address.city, address.district, order.requested_courier
        )
        if choice is not None:
            courier = choice.courier
            if address_changed or order.courier is None or order.courier.code != courier.code:
                courier_events.append(
                    OrderCourierAssigned(
                        **event_base(order, now),
                        courier=courier.code,
                        courier_name=courier.name(rules.note_language),
                        preference_rank=courier.rank,
                        requested_by_customer=choice.requested_by_customer,
                        province=address.province,
                        city=address.city,
                    )
                )
            order.courier = CourierState(
                code=courier.code,
                name=courier.name(rules.note_language),
                rank=courier.rank,
                requested_by_customer=choice.requested_by_customer,
            )
            order.no_courier_coverage = False
        else:
            if address_changed or not order.no_courier_coverage:
                notice = _no_coverage_notice(order)
                notices.append(notice)
                courier_events.append(
                    OrderNoCourierCoverage(
                        **event_base(order, now),
                        province=address.province,
                        city=address.city,
                        district=address.district,
                        refund_proposed=True,
                        customer_notified=True,
                        report_to_marketplace=order.channel is SalesChannel.MARKETPLACE,
                    )
                )
            order.courier = None
            order.no_courier_coverage = True
    else:
        order.courier = None  # decided once the address says where to
        order.no_courier_coverage = False

    result = review(
        order.lines,
        discount_cents=order.discount_cents,
        shipping_fee_cents=order.shipping_fee_cents,
        total_cents=order.total_cents,
        address=address,
        price_exception_approved_by=order.price_exception_approved_by,
        no_courier_coverage=order.no_courier_coverage,
    )
    note = rules.notes.note(
        order.customer_label,
        order.lines,
        order.buyer_note,
        order.courier.name if order.courier else None,
        no_coverage=order.no_courier_coverage,
        language=rules.note_language,
    )
    revision = order.review.revision + 1 if order.review else 1
    order.review = ReviewState(
        outcome=result.outcome,
        reasons=list(result.reasons),
        note=note,
        computed_total_cents=result.computed_total_cents,
        revision=revision,
    )
    events.append(
        OrderReviewed(
            **event_base(order, now),
            outcome=result.outcome,
            reasons=list(result.reasons),
            note=note,
            total_cents=order.total_cents,
            computed_total_cents=result.computed_total_cents,
            currency=order.currency,
            revision=revision,
        )
    )
    return [*events, *courier_events], notices


def _no_coverage_notice(order: Order) -> Notice:
    # The notifier has no template of its own for this question, so it goes as a message from
    # customer service (inquiry_reply), with the order id where the inquiry number would be.
    a = order.address
    where = f"{a.province}{a.city}{a.district}"
    if _language(order.language) == EN:
        agent, text = (
            "Customer service",
            f"The delivery address of your order {order.id} ({where}) is outside our partner "
            "couriers' service area. Please reply with another address; if that is not "
            "possible, we will refund the order in full.",
        )
    else:
        agent, text = (
            "客服",
            f"您的订单 {order.id} 的收货地址（{where}）不在我们合作快递的配送范围内。"
            "请回复提供其他收货地址；如无法更换，我们将为您办理全额退款。",
        )
    key = f"orders:{order.id}:no-coverage:{_slug(where)}"
    return Notice(
        key,
        "inquiry_reply",
        "inquiry_reply",
        {"inquiry_id": order.id, "agent_name": agent, "reply": text},
    )


def _slug(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- the commerce platform's lifecycle -----------------------------------------------------------


def first_seen(
    event: CommerceOrderEvent,
    rules: Rules,
    roster: DutyRoster,
    contacts: Sequence[Contact],
    now: datetime,
) -> Decision:
    """An order kefu has not seen: recorded from the event's snapshot and reviewed. If the
    first event is a later step (paid before placed, a missed placement), the steps the
    snapshot already shows are applied in lifecycle order, so nothing is skipped or crashed."""
    placed_at = ms(event.placed_at)
    order = Order(
        id=event.order_id,
        customer_id=event.customer_id,
        customer_name=event.customer_name,
        channel=event.channel,
        marketplace=event.marketplace,
        language=_language(event.language),
        contact=event.contact,
        lines=list(event.lines),
        currency=event.currency,
        discount_cents=event.discount_cents,
        shipping_fee_cents=event.shipping_fee_cents,
        total_cents=event.total_cents,
        address=event.address,
        # Customers type anything into the note, card numbers included: never stored.
        buyer_note=redact_card_numbers(event.buyer_note),
        requested_courier=event.requested_courier,
        price_exception_approved_by=event.price_exception_approved_by,
        placed_at=placed_at,
        on_duty_agent_id=roster.on_duty(placed_at),
        first_seen_as=event.kind,
        created_at=now,
        updated_at=now,
    )
    decision = Decision(order)
    events, notices = _review(order, rules, now)
    decision.events += events
    decision.notices += notices
    policy = rules.follow_up
    order.timers = [
        Timer(kind=TimerKind.FIRST_REMINDER, due_at=placed_at + policy.first_reminder),
        Timer(
            kind=TimerKind.LOST_CHECK,
            due_at=placed_at + policy.lost_after + policy.evidence_grace,
        ),
        Timer(kind=TimerKind.SECOND_REMINDER, due_at=placed_at + policy.second_reminder),
        Timer(kind=TimerKind.EXPIRY, due_at=placed_at + policy.expire_after),
    ]
    order.next_due_at = _next_due(order)

    # Catch up with what the snapshot says already happened.
    if event.paid_at is not None:
        _merge(decision, _pay(order, ms(event.paid_at), rules, contacts, now))
    if event.shipped_at is not None and event.carrier and event.tracking_number:
        _merge(decision, _ship(order, event, rules, now))
    if event.delivered_at is not None:
        _merge(decision, _deliver(order, ms(event.delivered_at), now))
    if event.cancelled_at is not None:
        _merge(decision, _cancel(order, ms(event.cancelled_at), now))
    if event.kind is CommerceEventKind.REFUNDED:
        _merge(decision, _refund(order, event, now))
    return decision


def _merge(into: Decision, part: Decision | None) -> None:
    if part is not None:
        into.events += part.events
        into.notices += part.notices


def apply(
    order: Order,
    event: CommerceOrderEvent,
    rules: Rules,
    contacts: Sequence[Contact],
    now: datetime,
    *,
    change_id: str,
) -> Decision | None:
    """One lifecycle step of a known order. None: nothing to do (a repeat or a step the order
    is already past). ``Rejected``: a step that contradicts the order (dead-lettered)."""
    kind = event.kind
    if kind is CommerceEventKind.PLACED:
        return None  # already known: a repeat, or the placement arriving after a later step
    if kind is CommerceEventKind.PAID:
        if order.status is OrderStatus.CANCELLED:
            raise Rejected(f"paid_at: order {order.id} was cancelled at {order.cancelled_at}")
        if order.paid_at is not None:
            return None
        return _pay(order, ms(event.paid_at or now), rules, contacts, now)
    if kind is CommerceEventKind.MODIFIED:
        return _modify(order, event, rules, contacts, now, change_id=change_id)
    if kind is CommerceEventKind.SHIPPED:
        return _ship(order, event, rules, now)
    if kind is CommerceEventKind.DELIVERED:
        if order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
            raise Rejected(f"delivered_at: order {order.id} is {order.status.value}")
        if order.delivered_at is not None:
            return None
        return _deliver(order, ms(event.delivered_at or now), now)
    if kind is CommerceEventKind.CANCELLED:
        if order.status is OrderStatus.CANCELLED:
            return None
        if order.status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED):
            raise Rejected(
                f"cancelled_at: order {order.id} is {order.status.value}; a shipped order "
                "comes back through after-sales, not a cancellation"
            )
        return _cancel(order, ms(event.cancelled_at or now), now)
    return _refund(order, event, now)


def _pay(
    order: Order, paid_at: datetime, rules: Rules, contacts: Sequence[Contact], now: datetime
) -> Decision:
    decision = Decision(order)
    order.paid_at = paid_at
    if order.status in (OrderStatus.PLACED, OrderStatus.EXPIRED):
        order.status = OrderStatus.PAID
        order.expired_at = None
        order.follow_up_closed = False
    _cancel_timers(order)
    if order.lost is not None and not order.lost.recovered:
        order.lost.recovered = True
        decision.events.append(
            OrderLossRecovered(
                **event_base(order, now), agent_id=order.lost.agent_id, paid_at=paid_at
            )
        )
    decision.events += reattribute(order, rules, contacts, now)
    return decision


def _ship(order: Order, event: CommerceOrderEvent, rules: Rules, now: datetime) -> Decision | None:
    carrier = event.carrier or ""
    tracking = event.tracking_number or ""
    if order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
        raise Rejected(f"shipped_at: order {order.id} is {order.status.value}")
    if order.tracking_number is not None:
        if (order.carrier, order.tracking_number) == (carrier, tracking):
            return None  # the same shipment reported again
        raise Rejected(
            f"tracking_number: order {order.id} already shipped with {order.carrier} "
            f"{order.tracking_number}; a second shipment {carrier} {tracking} is not accepted"
        )
    decision = Decision(order)
    courier = rules.couriers.get(carrier)
    name = courier.name(_language(order.language)) if courier else carrier
    order.carrier = carrier
    order.carrier_name = name
    order.tracking_number = tracking
    order.shipped_at = ms(event.shipped_at or now)
    if order.status in (OrderStatus.PLACED, OrderStatus.PAID, OrderStatus.EXPIRED):
        order.status = OrderStatus.SHIPPED
    _cancel_timers(order)
    if order.delivered_at is None and event.delivered_at is None:
        decision.events.append(
            OrderShippingNoticeDue(
                **event_base(order, now),
                carrier=carrier,
                carrier_name=name,
                tracking_number=tracking,
                shipped_at=order.shipped_at,
            )
        )
        decision.notices.append(
            Notice(
                f"orders:{order.id}:shipped:{_slug(carrier + ':' + tracking)}",
                "shipping_notice",
                "shipping_notice",
                {"order_id": order.id, "carrier": name, "tracking_number": tracking},
            )
        )
    return decision


def _deliver(order: Order, delivered_at: datetime, now: datetime) -> Decision:
    decision = Decision(order)
    order.delivered_at = delivered_at
    order.status = OrderStatus.DELIVERED
    decision.events += _close_follow_up(order, FollowUpClosedReason.DELIVERED, now)
    return decision


def _cancel(order: Order, cancelled_at: datetime, now: datetime) -> Decision:
    decision = Decision(order)
    order.cancelled_at = cancelled_at
    order.status = OrderStatus.CANCELLED
    decision.events += _close_follow_up(order, FollowUpClosedReason.CANCELLED, now)
    decision.events += _revoke(order, "cancelled", now)
    return decision


def _refund(order: Order, event: CommerceOrderEvent, now: datetime) -> Decision | None:
    refund_id = event.refund_id or ""
    amount = event.refund_amount_cents or 0
    if any(r.refund_id == refund_id for r in order.refunds):
        return None
    if order.paid_at is None:
        raise Rejected(f"refund_id: order {order.id} was never paid; nothing to refund")
    refundable = order.total_cents - order.refunded_cents
    if amount > refundable:
        raise Rejected(
            f"refund_amount_cents: {amount} exceeds what is left to refund ({refundable} of "
            f"{order.total_cents})"
        )
    decision = Decision(order)
    at = ms(event.refunded_at or now)
    order.refunds.append(Refund(refund_id=refund_id, amount_cents=amount, at=at))
    full = order.refunded_cents >= order.total_cents
    agent_id = order.attribution.agent_id if order.attribution else None
    decision.events.append(
        OrderRefunded(
            **event_base(order, now),
            refund_id=refund_id,
            refund_amount_cents=amount,
            refunded_total_cents=order.refunded_cents,
            total_cents=order.total_cents,
            currency=order.currency,
            full=full,
            agent_id=agent_id,
            refunded_at=at,
        )
    )
    if full:
        order.status = OrderStatus.REFUNDED
        decision.events += _close_follow_up(order, FollowUpClosedReason.REFUNDED, now)
        decision.events += _revoke(order, "refunded", now)
    return decision


def _revoke(order: Order, reason: str, now: datetime) -> list[OrderEvent]:
    attribution = order.attribution
    if attribution is None or attribution.revoked:
        return []
    attribution.revoked = True
    if attribution.agent_id is None:
        return []
    return [
        OrderAttributionRevoked(
            **event_base(order, now),
            agent_id=attribution.agent_id,
            rule=attribution.rule,
            reason=reason,
        )
    ]


# -- changes -------------------------------------------------------------------------------------


def line_snapshot(lines: Sequence[OrderLine]) -> list[dict[str, Any]]:
    return [line.model_dump(mode="json") for line in lines]


def classify_change(
    old_lines: Sequence[OrderLine],
    new_lines: Sequence[OrderLine],
    old_amounts: tuple[int, int],
    new_amounts: tuple[int, int],
    address_changed: bool,
) -> tuple[list[ChangeField], bool, bool]:
    """The changed fields, whether more was sold, and whether the price was cut."""
    old = {line.sku: line for line in old_lines}
    new = {line.sku: line for line in new_lines}
    fields: list[ChangeField] = []
    if address_changed:
        fields.append(ChangeField.ADDRESS)
    if set(old) != set(new):
        fields.append(ChangeField.ITEMS)
    common = set(old) & set(new)
    if any(old[s].quantity != new[s].quantity for s in common):
        fields.append(ChangeField.QUANTITY)
    price_changed = any(old[s].unit_price_cents != new[s].unit_price_cents for s in common)
    if price_changed or old_amounts != new_amounts:
        fields.append(ChangeField.PRICE)
    more_units = sum(li.quantity for li in new_lines) > sum(li.quantity for li in old_lines)
    # Selling more: more units, or items added without any taken away (a swap is a change).
    sold_more = more_units or bool(set(new) - set(old) and not set(old) - set(new))
    price_cut = (
        any(new[s].unit_price_cents < old[s].unit_price_cents for s in common)
        or new_amounts[0] > old_amounts[0]
    )
    return fields, sold_more, price_cut


def _modify(
    order: Order,
    event: CommerceOrderEvent,
    rules: Rules,
    contacts: Sequence[Contact],
    now: datetime,
    *,
    change_id: str,
) -> Decision | None:
    if order.status not in CHANGEABLE:
        raise Rejected(
            f"modified_at: order {order.id} is {order.status.value}; modifications are accepted "
            "only before shipping"
        )
    address_changed = event.address != order.address
    fields, sold_more, price_cut = classify_change(
        order.lines,
        event.lines,
        (order.discount_cents, order.shipping_fee_cents),
        (event.discount_cents, event.shipping_fee_cents),
        address_changed,
    )
    if not fields and event.total_cents == order.total_cents:
        return None
    before = changeable_view(order)
    order.lines = list(event.lines)
    order.discount_cents = event.discount_cents
    order.shipping_fee_cents = event.shipping_fee_cents
    order.total_cents = event.total_cents
    order.address = event.address
    order.price_exception_approved_by = event.price_exception_approved_by
    if not fields:
        fields = [ChangeField.PRICE]  # only the total moved
    return record_change(
        order,
        change_id=change_id,
        at=ms(event.modified_at or now),
        fields=fields,
        sold_more=sold_more,
        price_cut=price_cut,
        actor_kind=ActorKind.PLATFORM,
        actor_id=event.modified_by,
        approved_by=event.price_exception_approved_by,
        verified_by=None,
        before=before,
        rules=rules,
        contacts=contacts,
        now=now,
        re_review_courier=address_changed,
    )


def changeable_view(order: Order) -> dict[str, Any]:
    return {
        "address": order.address.model_dump(mode="json"),
        "lines": line_snapshot(order.lines),
        "discount_cents": order.discount_cents,
        "shipping_fee_cents": order.shipping_fee_cents,
        "total_cents": order.total_cents,
    }


def _changed_parts(view: dict[str, Any], fields: Sequence[ChangeField]) -> dict[str, Any]:
    keys: list[str] = []
    if ChangeField.ADDRESS in fields:
        keys.append("address")
    if {ChangeField.ITEMS, ChangeField.QUANTITY, ChangeField.PRICE} & set(fields):
        keys += ["lines", "discount_cents", "shipping_fee_cents", "total_cents"]
    return {k: view[k] for k in keys}


def record_change(
    order: Order,
    *,
    change_id: str,
    at: datetime,
    fields: list[ChangeField],
    sold_more: bool,
    price_cut: bool,
    actor_kind: ActorKind,
    actor_id: str | None,
    approved_by: str | None,
    verified_by: str | None,
    before: dict[str, Any],
    rules: Rules,
    contacts: Sequence[Contact],
    now: datetime,
    re_review_courier: bool,
) -> Decision:
    """Store an applied change: audit entry, ``order.changed``, a new review (and courier check
    when the address moved), and a new attribution if the order is paid."""
    decision = Decision(order)
    substantive = bool({ChangeField.ITEMS, ChangeField.QUANTITY} & set(fields))
    order.changes.append(
        RecordedChange(
            change_id=change_id,
            at=at,
            fields=fields,
            substantive=substantive,
            sold_more=sold_more and substantive,
            price_cut=price_cut,
            actor_kind=actor_kind,
            actor_id=actor_id,
            approved_by=approved_by,
        )
    )
    after_view = changeable_view(order)
    before_parts = _changed_parts(before, fields)
    after_parts = _changed_parts(after_view, fields)
    order.audit.append(
        AuditRecord(
            at=now,
            action="change",
            actor_kind=actor_kind,
            actor_id=actor_id,
            change_id=change_id,
            detail=", ".join(f.value for f in fields)
            + (f"; verified by {verified_by}" if verified_by else ""),
            before=before_parts,
            after=after_parts,
        )
    )
    decision.events.append(
        OrderChanged(
            **event_base(order, now),
            change_id=change_id,
            fields=fields,
            actor_kind=actor_kind,
            actor_id=actor_id,
            verified_by=verified_by,
            substantive=substantive,
            before=before_parts,
            after=after_parts,
            total_cents=order.total_cents,
        )
    )
    events, notices = _review(order, rules, now, address_changed=re_review_courier)
    decision.events += events
    decision.notices += notices
    decision.events += reattribute(order, rules, contacts, now)
    return decision


# -- attribution ---------------------------------------------------------------------------------


def reattribute(
    order: Order, rules: Rules, contacts: Sequence[Contact], now: datetime
) -> list[OrderEvent]:
    """Decide again who gets the paid order; an event only when the decision changed."""
    if order.paid_at is None or order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
        return []
    current = order.attribution
    if current is not None and current.revoked:
        return []
    facts = [
        ChangeFact(
            at=c.at,
            substantive=c.substantive,
            sold_more=c.sold_more,
            price_cut=c.price_cut,
            agent_id=c.actor_id if c.actor_kind is not ActorKind.CUSTOMER else None,
            approved_by=c.approved_by,
            change_id=c.change_id,
        )
        for c in order.changes
    ]
    result = attribute(
        order.placed_at,
        order.paid_at,
        contacts,
        facts,
        lookback=rules.attribution_lookback,
        price_approved_by=order.price_exception_approved_by,
    )
    violations = [
        AttributionViolation(agent_id=v.agent_id, kind=v.kind, quoted_by=v.quoted_by)
        for v in result.violations
    ]
    if (
        current is not None
        and current.agent_id == result.agent_id
        and current.rule is result.rule
        and current.violations == violations
    ):
        return []
    inquiry_id = (
        result.conversation
        if result.conversation and not result.conversation.startswith(("change:", "recorded:"))
        else None
    )
    channel = result.channel if result.channel in {c.value for c in Channel} else None
    order.attribution = AttributionState(
        agent_id=result.agent_id,
        rule=result.rule,
        revision=current.revision + 1 if current else 1,
        decided_at=now,
        inquiry_id=inquiry_id,
        contact_channel=channel,
        consulting_agent_ids=list(result.consulting_agent_ids),
        violations=violations,
    )
    return [
        OrderAttributed(
            **event_base(order, now),
            agent_id=result.agent_id,
            rule=result.rule,
            previous_agent_id=current.agent_id if current else None,
            revision=order.attribution.revision,
            placed_at=order.placed_at,
            paid_at=order.paid_at,
            total_cents=order.total_cents,
            currency=order.currency,
            contact_channel=Channel(channel) if channel else None,
            inquiry_id=inquiry_id,
            consulting_agent_ids=list(result.consulting_agent_ids),
            violations=violations,
        )
    ]


# -- unpaid follow-up timers ---------------------------------------------------------------------


def fire_due(
    order: Order, rules: Rules, contacts: Sequence[Contact], now: datetime
) -> Decision | None:
    """Fire the timers whose time has come, each once. A reminder overtaken by a later one
    (the service was down) is skipped rather than sent late next to it."""
    due = sorted(
        (t for t in order.timers if not t.done and t.due_at <= now), key=lambda t: t.due_at
    )
    if not due:
        return None
    decision = Decision(order)
    if order.status is not OrderStatus.PLACED:
        _cancel_timers(order)
        return decision
    policy = rules.follow_up
    expiry_at = order.placed_at + policy.expire_after
    for timer in due:
        timer.done = True
        if timer.kind is TimerKind.LOST_CHECK:
            deadline = order.placed_at + policy.lost_after
            talk = [*contacts, *agent_contacts(order)]
            if any(order.placed_at <= c.at <= deadline for c in talk):
                timer.outcome = "contacted"
                continue
            timer.outcome = "fired"
            order.lost = LostState(
                agent_id=order.on_duty_agent_id, deadline_at=deadline, declared_at=now
            )
            decision.events.append(
                OrderLost(
                    **event_base(order, now),
                    agent_id=order.on_duty_agent_id,
                    placed_at=order.placed_at,
                    deadline_at=deadline,
                    total_cents=order.total_cents,
                    currency=order.currency,
                )
            )
        elif timer.kind is TimerKind.EXPIRY:
            timer.outcome = "fired"
            order.status = OrderStatus.EXPIRED
            order.expired_at = now
            decision.events.append(
                OrderExpired(
                    **event_base(order, now),
                    placed_at=order.placed_at,
                    expired_at=now,
                    total_cents=order.total_cents,
                    currency=order.currency,
                )
            )
            decision.events += _close_follow_up(order, FollowUpClosedReason.EXPIRED, now)
            break
        else:
            overtaken = any(
                t is not timer
                and t.kind in (TimerKind.SECOND_REMINDER, TimerKind.EXPIRY)
                and t.due_at > timer.due_at
                for t in due
            )
            if overtaken:
                timer.outcome = "skipped"
                continue
            timer.outcome = "fired"
            kind = (
                ReminderKind.FIRST
                if timer.kind is TimerKind.FIRST_REMINDER
                else ReminderKind.SECOND
            )
            decision.events.append(
                OrderPaymentReminderDue(
                    **event_base(order, now),
                    reminder=kind,
                    due_at=timer.due_at,
                    placed_at=order.placed_at,
                    total_cents=order.total_cents,
                    currency=order.currency,
                    pay_before=expiry_at,
                    agent_id=order.on_duty_agent_id,
                )
            )
            local = expiry_at.astimezone(ZoneInfo(rules.shop_timezone))
            decision.notices.append(
                Notice(
                    f"orders:{order.id}:payment-reminder:{kind.value}",
                    "payment_reminder",
                    "payment_reminder",
                    {
                        "order_id": order.id,
                        "amount": money(order.total_cents),
                        "currency": order.currency,
                        "pay_before": local.strftime("%Y-%m-%d %H:%M"),
                    },
                )
            )
    order.next_due_at = _next_due(order)
    return decision
