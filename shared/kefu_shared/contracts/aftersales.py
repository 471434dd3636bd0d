"""Contracts of the after-sales service: the inbound marketplace review and the case events.

Inbound: ``MarketplaceReview`` (v1) on ``topics.MARKETPLACE_REVIEWS``, written by the marketplace
adapters inside an ``Envelope`` (subject = review id). ``review_id`` + ``marketplace`` is the
deduplication key: the same review twice opens one case.

Outbound: the ``aftersales.*`` events on ``topics.AFTERSALES_EVENTS``; subject (Kafka key) =
**case id**, so one case's events stay in order on one partition. Every event carries the case
id, its kind, the customer, the order (when known), the case's state after the change and the
time of the change (``occurred_at``). Events go out through the outbox of the case document with
the change that caused them; ``causation_id`` is the consumed message's envelope id (or the HTTP
command), so a redelivered input never yields a second event. Within v1 changes are additive.

Follow-up (DOMAIN.md 3.4): the after-sales service does **not** send the satisfaction survey.
The feedback service sends it when it sees ``aftersales.case_closed``, which carries what it
needs (customer id, contact, channel, language, case kind, opened/closed times). Customer
progress notices go through the notifier (``aftersales_<state>`` templates).

Money is integer **cents** of ``currency`` (ISO 4217), as in the orders contracts.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kefu_shared import topics
from kefu_shared.envelope import EventData

CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$"
"""A case id is also a URL path segment and part of the notifier's idempotency keys."""


class CaseKind(StrEnum):
    """What the customer asks for (DOMAIN.md 3.1), or a negative marketplace review (3.5)."""

    RETURN = "return"
    """Send the item back for a refund."""
    EXCHANGE = "exchange"
    """Send the item back for a replacement."""
    REFUND_ONLY = "refund_only"
    """Money back without sending anything back (e.g. item lost or not worth returning)."""
    REPAIR = "repair"
    """Send the item in to be repaired and returned."""
    QUALITY_COMPLAINT = "quality_complaint"
    """A complaint about quality or damage; resolved by compensation (refund) or explanation."""
    NEGATIVE_REVIEW = "negative_review"
    """A 1-2 star marketplace review to reply to and resolve."""


class RequestReason(StrEnum):
    """Why the customer asks (the policy's windows and who pays shipping depend on it)."""

    QUALITY_PROBLEM = "quality_problem"
    DAMAGED_IN_TRANSIT = "damaged_in_transit"
    WRONG_ITEM = "wrong_item"
    NOT_AS_DESCRIBED = "not_as_described"
    CHANGED_MIND = "changed_mind"


class CaseState(StrEnum):
    """Where a case is. Requests: requested -> under_review -> approved | rejected ->
    awaiting_return_parcel -> received -> inspected -> refunded | exchanged | repaired -> closed
    (refund_only skips the parcel). Negative reviews: awaiting_reply -> answered -> closed."""

    REQUESTED = "requested"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    AWAITING_RETURN_PARCEL = "awaiting_return_parcel"
    RECEIVED = "received"
    INSPECTED = "inspected"
    REFUNDED = "refunded"
    EXCHANGED = "exchanged"
    REPAIRED = "repaired"
    CLOSED = "closed"
    AWAITING_REPLY = "awaiting_reply"
    ANSWERED = "answered"


class CaseOrigin(StrEnum):
    """How the case was opened."""

    HTTP = "http"
    """An agent or the shop's front end filed a complete request (``POST /cases``)."""
    INQUIRY = "inquiry"
    """An inquiry classified as after-sales; opened ``requested``, an agent completes it."""
    MARKETPLACE_REVIEW = "marketplace_review"
    """A negative marketplace review."""


class Verdict(StrEnum):
    """The outcome of a policy review."""

    APPROVED = "approved"
    REJECTED = "rejected"
    NEEDS_SUPERVISOR = "needs_supervisor"


class ShippingPayer(StrEnum):
    """Who pays the return shipping."""

    CUSTOMER = "customer"
    SHOP = "shop"
    NONE = "none"
    """Nothing is shipped back (refund only, complaint)."""


class CaseLine(BaseModel):
    """One order line the case is about."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str
    quantity: int = Field(ge=1)
    category: str | None = Field(default=None, description="The product category, from the order.")
    unit_price_cents: int | None = Field(default=None, description="Price charged, from the order.")


class CaseContact(BaseModel):
    """How to reach the customer (personal data: for notices and the survey only)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: str | None = None
    phone: str | None = None
    wechat_openid: str | None = None
    marketplace_im_id: str | None = None


class MarketplaceReview(EventData):
    """A review a customer posted on a marketplace (consumed, not emitted; v1).

    Published by the marketplace adapters on ``kefu.marketplace.reviews``. A rating of 1-2
    (policy data) opens a negative-review case with a reply deadline; others are only counted.
    """

    event_type: ClassVar[str] = "marketplace.review_posted"
    topic: ClassVar[str] = topics.MARKETPLACE_REVIEWS
    subject_field: ClassVar[str] = "review_id"

    review_id: str = Field(min_length=1, max_length=200, description="The marketplace's id.")
    marketplace: str = Field(
        min_length=1, max_length=64, description="e.g. 'taobao', 'jd', 'tmall'."
    )
    order_id: str = Field(min_length=1, max_length=100)
    customer_id: str = Field(min_length=1, max_length=200)
    rating: int = Field(ge=1, le=5, description="1 (worst) .. 5 (best).")
    text: str = Field(default="", max_length=4000)
    posted_at: datetime = Field(description="When it was posted (timezone-aware).")
    language: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$")

    @field_validator("review_id", "marketplace", "order_id", "customer_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("posted_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone")
        return value


class AftersalesEvent(EventData):
    """Fields common to every after-sales event."""

    topic: ClassVar[str] = topics.AFTERSALES_EVENTS
    subject_field: ClassVar[str] = "case_id"

    case_id: str
    kind: CaseKind
    customer_id: str
    order_id: str | None = Field(default=None, description="None while an agent completes it.")
    state: CaseState = Field(description="The case's state after this change.")
    occurred_at: datetime = Field(description="When the change happened (UTC).")


class AftersalesCaseOpened(AftersalesEvent):
    """A case was opened: by a complete request (``origin`` http), from an inquiry classified
    as after-sales (``requested``, ``needs_completion`` true until an agent adds the order lines),
    or by a negative review. ``reason``/``lines`` are None/empty while not known."""

    event_type: ClassVar[str] = "aftersales.case_opened"

    origin: CaseOrigin
    reason: RequestReason | None = None
    lines: list[CaseLine] = Field(default_factory=list)
    description: str = ""
    evidence_count: int = Field(default=0, description="How many evidence links were given.")
    needs_completion: bool = False
    channel: str | None = Field(default=None, description="Where the customer asked (chat, ...).")
    language: str = Field(description="zh-CN or en: the customer's language for notices.")
    inquiry_id: str | None = None
    review_id: str | None = None


class AftersalesDecisionMade(AftersalesEvent):
    """The request was reviewed: ``verdict`` approved / rejected / needs_supervisor, by the
    policy (``decided_by`` policy, ``rule`` = the id of the rule that decided) or by a supervisor
    (``decided_by`` supervisor, ``rule`` = ``supervisor_override`` or ``supervisor_approval``,
    ``supervisor_id`` and ``reason`` set; audited). ``refund_amount_cents`` is the most that may be
    refunded (None for exchanges and repairs);
    ``return_shipping_paid_by`` who pays sending the item back."""

    event_type: ClassVar[str] = "aftersales.decision_made"

    verdict: Verdict
    rule: str
    rule_description: str = ""
    decided_by: str = Field(description="'policy' or 'supervisor'.")
    supervisor_id: str | None = None
    reason: str = Field(default="", description="Why, in words (told the customer if rejected).")
    return_shipping_paid_by: ShippingPayer = ShippingPayer.NONE
    refund_amount_cents: int | None = None
    currency: str | None = None
    policy_version: str = ""


class AftersalesStateChanged(AftersalesEvent):
    """The case moved from ``from_state`` to ``state``. ``actor_id`` is who did it (None: the
    system). ``override`` is true when a supervisor forced a transition the state machine does
    not allow (``reason`` then says why; audited). Tracking of a return parcel and inspection
    results ride along where they apply."""

    event_type: ClassVar[str] = "aftersales.state_changed"

    from_state: CaseState
    actor_id: str | None = None
    override: bool = False
    reason: str = ""
    carrier: str | None = None
    tracking_number: str | None = None
    inspection_passed: bool | None = None
    inspection_result: str | None = None


class AftersalesReturnParcelSent(AftersalesEvent):
    """The customer sent the item back: ``carrier`` and ``tracking_number`` of the return parcel,
    so the warehouse can expect it (the case stays ``awaiting_return_parcel`` until received)."""

    event_type: ClassVar[str] = "aftersales.return_parcel_sent"

    carrier: str
    tracking_number: str
    actor_id: str | None = None


class AftersalesRefundIssued(AftersalesEvent):
    """Money went back to the customer for the case (once per case): ``amount_cents``;
    ``refund_reference`` is the payment system's reference when given."""

    event_type: ClassVar[str] = "aftersales.refund_issued"

    amount_cents: int = Field(gt=0)
    currency: str
    refund_reference: str | None = None
    actor_id: str | None = None
    lines: list[CaseLine] = Field(default_factory=list)


class AftersalesExchangeShipped(AftersalesEvent):
    """The replacement for an exchange (or the repaired item) left the warehouse, with the
    ``carrier`` and ``tracking_number`` the customer can follow."""

    event_type: ClassVar[str] = "aftersales.exchange_shipped"

    carrier: str
    tracking_number: str
    lines: list[CaseLine] = Field(default_factory=list)
    actor_id: str | None = None


class AftersalesCaseClosed(AftersalesEvent):
    """The case is finished (once per case). The feedback service sends the satisfaction survey
    on it (survey id ``aftersales-<case_id>``); after-sales does not. ``resolution``: refunded,
    exchanged, repaired, rejected, answered (a review), withdrawn or resolved (agent's words in
    ``note``). ``contact``, ``channel``, ``language`` say how to reach the
    customer; ``resolution_seconds`` runs from ``opened_at`` to ``closed_at``."""

    event_type: ClassVar[str] = "aftersales.case_closed"

    resolution: str
    note: str = ""
    actor_id: str | None = None
    channel: str | None = None
    language: str = Field(description="zh-CN or en.")
    contact: CaseContact = Field(default_factory=CaseContact)
    opened_at: datetime
    closed_at: datetime
    resolution_seconds: float
    refunded_amount_cents: int | None = None
    currency: str | None = None


class NegativeReviewReceived(AftersalesEvent):
    """A 1-2 star marketplace review opened a case (``awaiting_reply``); the agent must reply by
    ``reply_due_at``."""

    event_type: ClassVar[str] = "aftersales.negative_review_received"

    review_id: str
    marketplace: str
    rating: int
    text: str
    posted_at: datetime
    reply_due_at: datetime


class NegativeReviewAnswered(AftersalesEvent):
    """The agent's public ``reply`` and internal ``explanation`` (the cause) were recorded; the
    marketplace adapter posts ``reply`` on the marketplace. ``within_deadline`` is false when it
    came after ``reply_due_at``."""

    event_type: ClassVar[str] = "aftersales.negative_review_answered"

    review_id: str
    marketplace: str
    agent_id: str
    reply: str
    explanation: str
    answered_at: datetime
    reply_due_at: datetime
    within_deadline: bool
    reply_seconds: float = Field(description="From the review's posting to the reply.")


class NegativeReviewReplyOverdue(AftersalesEvent):
    """Nobody replied to a negative review by ``reply_due_at`` (once per case; late rather than
    never if the service was down at that moment)."""

    event_type: ClassVar[str] = "aftersales.reply_overdue"

    review_id: str
    marketplace: str
    reply_due_at: datetime


AFTERSALES_EVENT_TYPES: tuple[type[AftersalesEvent], ...] = (
    AftersalesCaseOpened,
    AftersalesDecisionMade,
    AftersalesStateChanged,
    AftersalesReturnParcelSent,
    AftersalesRefundIssued,
    AftersalesExchangeShipped,
    AftersalesCaseClosed,
    NegativeReviewReceived,
    NegativeReviewAnswered,
    NegativeReviewReplyOverdue,
)
