"""Contracts of the orders service: the commerce platform's order lifecycle in, order events out.

Inbound: ``CommerceOrderEvent`` (v1) on ``topics.COMMERCE_ORDERS`` (``kefu.commerce.orders``),
written by the commerce platform's adapter inside an ``Envelope`` whose subject (and Kafka key)
is the **order id**, so one order's events stay in order on one partition. The envelope id is the
deduplication key: the same envelope twice changes nothing. **Every event carries the complete
order as it is after the change** (customer, channel, lines with catalogue prices, amounts,
address, every lifecycle timestamp known so far), so a consumer that missed earlier events can
still build its view from any one of them. The orders service and the after-sales service both
consume this topic (each in its own consumer group).

Outbound: the ``order.*`` events on ``topics.ORDERS_EVENTS``; subject (Kafka key) = **order id**.
Every event carries the order id, the customer id, the sales channel (and marketplace), and the
time of the change (``occurred_at``); events about an agent carry ``agent_id``. They go out through
the outbox of the order document with the change that caused them; ``causation_id`` is the
consumed envelope's id (or the HTTP command's), so a redelivered input never yields a second
event. The feedback service computes conversion (``order.attributed`` /
``order.attribution_revoked``) and lost orders per agent (``order.lost``) from them.

Money is integer **cents** of ``currency`` (ISO 4217, default CNY) everywhere in this module.
Within v1 changes are additive only; consumers ignore fields they do not know.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kefu_shared import topics
from kefu_shared.envelope import EventData
from kefu_shared.topics import Channel

ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$"
"""An order id is also a URL path segment and part of the notifier's idempotency keys."""

MAX_LINES = 200


# -- inbound: the commerce platform's order lifecycle ---------------------------------------------


class CommerceEventKind(StrEnum):
    """What happened to the order on the commerce platform."""

    PLACED = "placed"
    """The customer placed (拍下) the order; not paid yet. Needs ``placed_at``."""
    PAID = "paid"
    """The customer paid. Needs ``paid_at``."""
    MODIFIED = "modified"
    """The shop changed the order in the platform's back office (price, lines, address) before
    shipping; the snapshot is the order after the change. Needs ``modified_at``; ``modified_by``
    names the back-office user (an agent id) when known."""
    SHIPPED = "shipped"
    """Handed to the courier. Needs ``shipped_at``, ``carrier`` and ``tracking_number``."""
    DELIVERED = "delivered"
    """The courier delivered the parcel. Needs ``delivered_at``."""
    CANCELLED = "cancelled"
    """The order was cancelled (by the customer, the shop or the platform). Needs
    ``cancelled_at``."""
    REFUNDED = "refunded"
    """Money went back to the customer (all or part). Needs ``refunded_at``, ``refund_id`` and
    ``refund_amount_cents`` (this refund alone, not the running sum)."""


class SalesChannel(StrEnum):
    """Where the order was placed."""

    WEB = "web"
    APP = "app"
    WECHAT = "wechat"
    """A WeChat mini-shop."""
    MARKETPLACE = "marketplace"
    """A marketplace store (``marketplace`` names which: taobao, tmall, jd, ...)."""
    PHONE = "phone"
    """Taken by an agent on the phone."""


class OrderLine(BaseModel):
    """One line of the order, with the price charged and the catalogue price at order time."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str = Field(min_length=1, max_length=100)
    name: str = Field(min_length=1, max_length=200, description="Product name, e.g. '1983'.")
    category: str = Field(
        default="", max_length=64, description="Product category, e.g. 'liquor' (units, policy)."
    )
    quantity: int = Field(ge=1, le=100_000)
    unit_price_cents: int = Field(ge=0, description="Price charged per unit.")
    catalogue_unit_price_cents: int = Field(
        ge=0, description="The shop's catalogue price per unit when the order was placed."
    )

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_price_cents


class DeliveryAddress(BaseModel):
    """Where the parcel goes. Parts may be empty on input: the review reports what is missing."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    province: str = Field(default="", max_length=64, description="e.g. 浙江省.")
    city: str = Field(default="", max_length=64, description="e.g. 杭州市.")
    district: str = Field(default="", max_length=64, description="e.g. 西湖区.")
    street: str = Field(default="", max_length=300, description="Street, building, room.")
    receiver: str = Field(default="", max_length=100, description="Receiver's name.")
    phone: str = Field(default="", max_length=32, description="Receiver's phone.")
    postal_code: str = Field(default="", max_length=16)


class CustomerContact(BaseModel):
    """How to reach the customer for notices (personal data: never in published events)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    wechat_openid: str | None = Field(default=None, max_length=128)
    marketplace_im_id: str | None = Field(default=None, max_length=128)


_KIND_TIMESTAMP = {
    CommerceEventKind.PLACED: "placed_at",
    CommerceEventKind.PAID: "paid_at",
    CommerceEventKind.MODIFIED: "modified_at",
    CommerceEventKind.SHIPPED: "shipped_at",
    CommerceEventKind.DELIVERED: "delivered_at",
    CommerceEventKind.CANCELLED: "cancelled_at",
    CommerceEventKind.REFUNDED: "refunded_at",
}


class CommerceOrderEvent(EventData):
    """One step of an order's lifecycle on the commerce platform (consumed, not emitted; v1).

    Published by the commerce platform's adapter on ``kefu.commerce.orders``, key = order id.
    The fields describe the whole order after this step; the step's own moment is its
    ``<kind>_at`` timestamp (``paid_at`` for ``paid``...), which must be present. Amounts add up
    as ``total_cents = sum(quantity * unit_price_cents) - discount_cents + shipping_fee_cents``;
    the orders service reviews that rather than refusing the order.
    """

    event_type: ClassVar[str] = "commerce.order_event"
    topic: ClassVar[str] = topics.COMMERCE_ORDERS
    subject_field: ClassVar[str] = "order_id"

    kind: CommerceEventKind
    order_id: str = Field(pattern=ORDER_ID_PATTERN, description="The platform's order id.")
    customer_id: str = Field(min_length=1, max_length=200, description="The shop's customer id.")
    customer_name: str = Field(default="", max_length=200, description="For the order note.")
    channel: SalesChannel
    marketplace: str | None = Field(
        default=None, max_length=64, description="Required when channel is marketplace."
    )
    language: str = Field(
        default="zh-CN",
        pattern=r"^(zh|zh-CN|en)$",
        description="The customer's preferred language for notices: zh-CN (or zh) or en.",
    )
    contact: CustomerContact = Field(default_factory=CustomerContact)
    lines: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    discount_cents: int = Field(default=0, ge=0)
    shipping_fee_cents: int = Field(default=0, ge=0)
    total_cents: int = Field(ge=0, description="What the customer pays (or paid).")
    address: DeliveryAddress = Field(default_factory=DeliveryAddress)
    buyer_note: str = Field(
        default="", max_length=500, description="The customer's requests, e.g. 'gift, no invoice'."
    )
    requested_courier: str | None = Field(
        default=None, max_length=32, description="Courier code the customer asked for, e.g. yunda."
    )
    price_exception_approved_by: str | None = Field(
        default=None,
        max_length=200,
        description="Supervisor who approved a price below the catalogue or a gift, if any.",
    )
    placed_at: datetime
    paid_at: datetime | None = None
    modified_at: datetime | None = None
    modified_by: str | None = Field(
        default=None, max_length=200, description="Back-office user (agent id) of a modification."
    )
    shipped_at: datetime | None = None
    carrier: str | None = Field(
        default=None, max_length=64, description="Courier code or name, on shipped."
    )
    tracking_number: str | None = Field(default=None, max_length=64)
    delivered_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str = Field(default="", max_length=300)
    refunded_at: datetime | None = None
    refund_id: str | None = Field(default=None, max_length=100)
    refund_amount_cents: int | None = Field(
        default=None, gt=0, description="This refund's amount (not the running total)."
    )

    @field_validator("customer_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator(
        "placed_at",
        "paid_at",
        "modified_at",
        "shipped_at",
        "delivered_at",
        "cancelled_at",
        "refunded_at",
    )
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a timezone")
        return value

    @model_validator(mode="after")
    def _kind_has_its_fields(self) -> Self:
        stamp = _KIND_TIMESTAMP[self.kind]
        if getattr(self, stamp) is None:
            raise ValueError(f"{stamp}: required for a {self.kind.value} event")
        if self.channel is SalesChannel.MARKETPLACE and not self.marketplace:
            raise ValueError("marketplace: required when channel is marketplace")
        if self.kind is CommerceEventKind.SHIPPED and not (self.carrier and self.tracking_number):
            raise ValueError("carrier, tracking_number: required for a shipped event")
        if self.kind is CommerceEventKind.REFUNDED and not (
            self.refund_id and self.refund_amount_cents
        ):
            raise ValueError("refund_id, refund_amount_cents: required for a refunded event")
        return self

    def moment(self) -> datetime:
        """When this step happened (its ``<kind>_at``)."""
        value = getattr(self, _KIND_TIMESTAMP[self.kind])
        assert isinstance(value, datetime)
        return value


# -- outbound: order.* events --------------------------------------------------------------------


class OrderEvent(EventData):
    """Fields common to every order event."""

    topic: ClassVar[str] = topics.ORDERS_EVENTS
    subject_field: ClassVar[str] = "order_id"

    order_id: str
    customer_id: str
    channel: SalesChannel = Field(description="Where the order was placed.")
    marketplace: str | None = None
    occurred_at: datetime = Field(description="When the change happened (UTC).")


class ReviewOutcome(StrEnum):
    CONFIRMED = "confirmed"
    NEEDS_ATTENTION = "needs_attention"


class ReviewReasonCode(StrEnum):
    TOTAL_MISMATCH = "total_mismatch"
    """total_cents differs from the lines, the discount and the shipping fee."""
    PRICE_DIFFERS_FROM_CATALOGUE = "price_differs_from_catalogue"
    """A unit price is not the catalogue price (a cut needs a supervisor's approval)."""
    ADDRESS_INCOMPLETE = "address_incomplete"
    """A part of the delivery address is missing (``detail`` names which)."""
    NO_COURIER_COVERAGE = "no_courier_coverage"
    """No partner courier serves the address."""


class ReviewReason(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    code: ReviewReasonCode
    detail: str = Field(description="Human-readable, e.g. 'lines add up to 19800, total 18800'.")
    sku: str | None = None


class OrderReviewed(OrderEvent):
    """The order was reviewed: when it is placed (or first seen), and again after a change.
    ``outcome`` is confirmed or needs_attention with ``reasons``; ``note`` is the order note in
    the handbook's format, e.g. ``[王芳] 6 bottles 1983, ship with Yunda``."""

    event_type: ClassVar[str] = "order.reviewed"

    outcome: ReviewOutcome
    reasons: list[ReviewReason] = Field(default_factory=list)
    note: str
    total_cents: int
    computed_total_cents: int = Field(description="What the lines, discount and fee add up to.")
    currency: str
    revision: int = Field(ge=1, description="1 for the first review, +1 after each change.")


class OrderCourierAssigned(OrderEvent):
    """A partner courier covers the address and was chosen: the customer's requested courier if
    it covers the address, else the best by the coverage table's preference order."""

    event_type: ClassVar[str] = "order.courier_assigned"

    courier: str = Field(description="Courier code, e.g. yunda.")
    courier_name: str = Field(description="Display name, e.g. 韵达 / Yunda.")
    preference_rank: int = Field(description="1 = the shop's first choice.")
    requested_by_customer: bool
    province: str
    city: str


class OrderNoCourierCoverage(OrderEvent):
    """No partner courier covers the address: the order is marked, the customer is asked (via
    the notifier) and a refund is proposed; ``report_to_marketplace`` is true for marketplace
    orders, which must be reported to the marketplace."""

    event_type: ClassVar[str] = "order.no_courier_coverage"

    province: str
    city: str
    district: str
    refund_proposed: bool = True
    customer_notified: bool = Field(description="A notice went to the notifier.")
    report_to_marketplace: bool


class ReminderKind(StrEnum):
    FIRST = "first"
    SECOND = "second"


class OrderPaymentReminderDue(OrderEvent):
    """An unpaid order reached a reminder time (``first``: before the lost mark, ``second``:
    later); the customer is reminded through the notifier. Emitted once per reminder, also
    when the service was down at that moment (then late)."""

    event_type: ClassVar[str] = "order.payment_reminder_due"

    reminder: ReminderKind
    due_at: datetime
    placed_at: datetime
    total_cents: int
    currency: str
    pay_before: datetime = Field(description="When the unpaid order expires.")
    agent_id: str | None = Field(description="The on-duty agent who should follow up, if any.")


class OrderLost(OrderEvent):
    """Nobody contacted the customer within the lost window (20 minutes by default) of an
    unpaid order: it counts as lost for ``agent_id``, the agent on duty when the order was
    placed (None if nobody was on duty). Emitted once."""

    event_type: ClassVar[str] = "order.lost"

    agent_id: str | None
    placed_at: datetime
    deadline_at: datetime = Field(description="placed_at + the lost window.")
    total_cents: int
    currency: str


class OrderLossRecovered(OrderEvent):
    """An order counted lost was paid after all (``paid_at``); ``agent_id`` is the lost order's
    agent. Consumers that only count orders really lost subtract it."""

    event_type: ClassVar[str] = "order.loss_recovered"

    agent_id: str | None
    paid_at: datetime


class OrderExpired(OrderEvent):
    """An unpaid order reached its expiry time: the follow-up stops (the platform closes it)."""

    event_type: ClassVar[str] = "order.expired"

    placed_at: datetime
    expired_at: datetime
    total_cents: int
    currency: str


class OrderShippingNoticeDue(OrderEvent):
    """The order shipped: the customer is told the carrier and the tracking number through the
    notifier. Emitted once per shipment."""

    event_type: ClassVar[str] = "order.shipping_notice_due"

    carrier: str
    carrier_name: str
    tracking_number: str
    shipped_at: datetime


class FollowUpClosedReason(StrEnum):
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REFUNDED = "refunded"


class OrderFollowUpClosed(OrderEvent):
    """Customer service's follow-up of the order ended (delivered, cancelled, expired or fully
    refunded); no timer of the order fires after it."""

    event_type: ClassVar[str] = "order.follow_up_closed"

    reason: FollowUpClosedReason


class ActorKind(StrEnum):
    AGENT = "agent"
    CUSTOMER = "customer"
    PLATFORM = "platform"
    """The commerce platform's back office (a ``modified`` event)."""


class ChangeField(StrEnum):
    ADDRESS = "address"
    ITEMS = "items"
    """Lines added or removed."""
    QUANTITY = "quantity"
    """Quantities of existing lines."""
    PRICE = "price"
    """Unit prices, discount or shipping fee (platform modifications only)."""


class OrderChanged(OrderEvent):
    """The order changed: through the orders API after identity verification
    (``verified_by``), or in the platform's back office (``actor_kind`` platform). ``before`` and
    ``after`` hold the changed parts (address, lines, amounts); ``substantive`` is true when
    items or quantities changed (what the attribution rules call a real change)."""

    event_type: ClassVar[str] = "order.changed"

    change_id: str
    fields: list[ChangeField]
    actor_kind: ActorKind
    actor_id: str | None
    verified_by: str | None = Field(
        description="one_time_code or order_details; None for platform modifications."
    )
    substantive: bool
    before: dict[str, object]
    after: dict[str, object]
    total_cents: int


class OrderIdentityVerificationFailed(OrderEvent):
    """A change was asked with a wrong, expired or used-up proof of identity; nothing changed.
    ``locked`` is true when the one-time code is void after too many failures."""

    event_type: ClassVar[str] = "order.identity_verification_failed"

    method: str = Field(description="one_time_code or order_details.")
    reason: str = Field(description="e.g. wrong_code, expired, details_mismatch, locked.")
    actor_kind: ActorKind
    actor_id: str | None
    failed_attempts: int
    locked: bool


class AttributionRule(StrEnum):
    """The handbook's rule that decided who gets the order (DOMAIN.md 2.7)."""

    CONSULTED_BEFORE_PLACING = "consulted_before_placing"
    """The customer talked to the agent before placing the order: the agent's."""
    CONSULTED_BEFORE_PAYING = "consulted_before_paying"
    """Placed, then the agent talked to the customer before the payment: the agent's."""
    PAID_BEFORE_CONTACT = "paid_before_contact"
    """Placed and paid before any talk with an agent, no change since: nobody's."""
    NO_CONTACT = "no_contact"
    """No agent talked to the customer at all: nobody's."""
    SOLD_MORE_AFTER_PAYMENT = "sold_more_after_payment"
    """Paid before any talk, then the agent sold more (quantities or items added)."""
    CHANGED_AFTER_PAYMENT = "changed_after_payment"
    """Paid before any talk, then the order changed for real with the agent (items swapped)."""
    EARLIER_QUOTE_KEPT = "earlier_quote_kept"
    """An earlier agent quoted; a later one only assisted (price or no real change): earlier's."""
    CLOSER_TAKES_IT = "closer_takes_it"
    """The earlier talk did not close; the agent who closed it gets the order."""


class AttributionViolation(BaseModel):
    """A breach of the handbook's rule that another agent's quoted customer gets no price cut
    or gift without a supervisor's approval."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    agent_id: str | None
    kind: str = Field(description="price_cut_on_quoted_customer")
    quoted_by: str


class OrderAttributed(OrderEvent):
    """Who gets the paid order as a deal: ``agent_id`` (None: nobody) by ``rule``. Emitted when
    the order is paid and again whenever later evidence (a late inquiry event, a change)
    changes the decision; the latest one counts. ``previous_agent_id`` is the agent of the
    decision it replaces. Refunded orders are not deals: see ``order.attribution_revoked``."""

    event_type: ClassVar[str] = "order.attributed"

    agent_id: str | None
    rule: AttributionRule
    previous_agent_id: str | None = None
    revision: int = Field(ge=1)
    placed_at: datetime
    paid_at: datetime
    total_cents: int
    currency: str
    contact_channel: Channel | None = Field(
        default=None, description="Where the deciding agent talked to the customer."
    )
    inquiry_id: str | None = Field(default=None, description="The deciding conversation.")
    consulting_agent_ids: list[str] = Field(
        default_factory=list, description="Every agent who talked to the customer (served)."
    )
    violations: list[AttributionViolation] = Field(default_factory=list)


class OrderRefunded(OrderEvent):
    """Money went back (``refund_amount_cents`` this time, ``refunded_total_cents`` so far);
    ``full`` when everything paid was refunded. ``agent_id`` is the attributed agent, if any."""

    event_type: ClassVar[str] = "order.refunded"

    refund_id: str
    refund_amount_cents: int
    refunded_total_cents: int
    total_cents: int
    currency: str
    full: bool
    agent_id: str | None
    refunded_at: datetime


class OrderAttributionRevoked(OrderEvent):
    """A deal no longer counts for ``agent_id``: the order was fully refunded or cancelled
    after payment (``reason``). Emitted once, after an ``order.attributed`` naming an agent."""

    event_type: ClassVar[str] = "order.attribution_revoked"

    agent_id: str
    rule: AttributionRule = Field(description="The rule of the revoked attribution.")
    reason: str = Field(description="refunded or cancelled.")


ORDER_EVENT_TYPES: tuple[type[OrderEvent], ...] = (
    OrderReviewed,
    OrderCourierAssigned,
    OrderNoCourierCoverage,
    OrderPaymentReminderDue,
    OrderLost,
    OrderLossRecovered,
    OrderExpired,
    OrderShippingNoticeDue,
    OrderFollowUpClosed,
    OrderChanged,
    OrderIdentityVerificationFailed,
    OrderAttributed,
    OrderRefunded,
    OrderAttributionRevoked,
)
