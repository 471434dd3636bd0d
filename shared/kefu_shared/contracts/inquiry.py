"""Contracts of the inquiry service: the inbound customer message and the published events.

Inbound: ``CustomerMessage`` (v1), written by each channel's adapter to
``topics.inbound_channel_topic(channel)`` inside an ``Envelope`` (subject = customer id, so one
customer's messages stay in order on one partition), or POSTed to the service's ``/messages``.

Outbound: the ``inquiry.*`` events on ``topics.INQUIRY_EVENTS``, subject = inquiry id. Every event
carries the inquiry id, the customer id, the channel the inquiry was opened on and the time of the
change (``occurred_at``); the category and agent where they are known. Other services rely on them:
orders attributes sales from who talked to whom and when, feedback computes response and
resolution times. Within v1 changes are additive only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kefu_shared import topics
from kefu_shared.envelope import EventData
from kefu_shared.topics import Channel

MAX_CONTENT_CHARS = 4000
"""Longest message content accepted (characters); longer is refused, not truncated."""


class Category(StrEnum):
    """What an inquiry is about (DOMAIN.md 1.3)."""

    PRODUCT = "product"
    ORDER = "order"
    PAYMENT = "payment"
    LOGISTICS = "logistics"
    AFTER_SALES = "after_sales"
    COMPLAINT = "complaint"
    SPAM = "spam"


class Department(StrEnum):
    """Departments an inquiry can be escalated to, outside customer service."""

    LOGISTICS = "logistics"
    FINANCE = "finance"
    QUALITY = "quality"


class SlaKind(StrEnum):
    FIRST_RESPONSE = "first_response"
    NEXT_RESPONSE = "next_response"
    RESOLUTION = "resolution"


class Contact(BaseModel):
    """How to reach the customer back. Personal data: the API shows it masked."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    phone: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=254)


class CustomerMessage(EventData):
    """One message a customer sent on one channel (v1).

    Published by the channel adapters on ``kefu.inquiry.inbound.<channel>`` (one topic per
    channel, so each channel scales on its own) and accepted by ``POST /messages`` for push
    channels. ``message_id`` is the deduplication key: the same id twice changes nothing.
    """

    event_type: ClassVar[str] = "inquiry.customer_message"
    topic: ClassVar[str] = "kefu.inquiry.inbound.<channel>"
    subject_field: ClassVar[str] = "customer_id"

    message_id: str = Field(min_length=1, max_length=200, description="Unique id; dedup key.")
    channel: Channel = Field(description="chat, phone, email, social or marketplace.")
    customer_id: str = Field(min_length=1, max_length=200, description="The shop's customer id.")
    customer_name: str = Field(default="", max_length=200)
    contact: Contact = Field(default_factory=Contact)
    content: str = Field(
        min_length=1,
        max_length=MAX_CONTENT_CHARS,
        description="The text (a call transcript for phone); card numbers are redacted on intake.",
    )
    order_reference: str | None = Field(default=None, max_length=100)
    language: str | None = Field(
        default=None, pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$", description="e.g. zh, en."
    )
    sent_at: datetime = Field(description="When the customer sent it (timezone-aware).")

    @field_validator("customer_id", "message_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("content")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("sent_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone")
        return value

    def inbound_topic(self) -> str:
        return topics.inbound_channel_topic(self.channel)


class InquiryEvent(EventData):
    """Fields common to every inquiry event."""

    topic: ClassVar[str] = topics.INQUIRY_EVENTS
    subject_field: ClassVar[str] = "inquiry_id"

    inquiry_id: str
    customer_id: str
    channel: Channel = Field(description="The channel the inquiry was opened on.")
    category: Category | None = Field(default=None, description="None until classified.")
    occurred_at: datetime = Field(description="When the change happened (UTC).")


class InquiryReceived(InquiryEvent):
    """A customer message was recorded: it opened an inquiry (``opened``) or joined the
    customer's open one (possibly from another channel: ``message_channel``). Not emitted for spam.
    ``content`` has card numbers redacted; ``agent_id`` is the agent holding the inquiry, if any."""

    event_type: ClassVar[str] = "inquiry.received"
    message_id: str
    message_channel: Channel
    opened: bool
    content: str
    order_reference: str | None = None
    language: str
    sent_at: datetime
    agent_id: str | None = None


class InquiryClassified(InquiryEvent):
    """A new inquiry got its category. ``confidence`` in [0, 1]; ``needs_human`` when it is below
    the threshold, so no bot answer and triage by any agent speaking ``language``."""

    event_type: ClassVar[str] = "inquiry.classified"
    confidence: float
    language: str
    needs_human: bool


class InquiryAutoAnswered(InquiryEvent):
    """The bot answered from the knowledge base (``article_id``, match ``score``) and the inquiry
    was resolved by it; a NotificationRequested carries the answer to the customer."""

    event_type: ClassVar[str] = "inquiry.auto_answered"
    article_id: str
    score: float
    message_id: str


class InquiryAssigned(InquiryEvent):
    """An agent (``agent_id``, ``agent_level``) now handles the inquiry; ``queued_seconds`` is
    how long it waited for one; ``previous_agent_id`` is set after a transfer or escalation."""

    event_type: ClassVar[str] = "inquiry.assigned"
    agent_id: str
    agent_level: str
    queued_seconds: float
    previous_agent_id: str | None = None


class InquiryAgentReplied(InquiryEvent):
    """An agent answered the customer. ``response_seconds``: from the oldest unanswered customer
    message to this reply; ``first_response`` is true for the inquiry's first human reply."""

    event_type: ClassVar[str] = "inquiry.agent_replied"
    agent_id: str
    reply_id: str
    quick_reply_id: str | None = None
    first_response: bool
    response_seconds: float


class InquiryTransferred(InquiryEvent):
    """The inquiry moved from ``from_agent_id`` to ``agent_id`` (same level), history kept."""

    event_type: ClassVar[str] = "inquiry.transferred"
    from_agent_id: str
    agent_id: str
    reason: str = ""


class InquiryEscalated(InquiryEvent):
    """Escalated by ``from_agent_id`` to a senior agent (``to_level`` = senior; assigned later by
    an ``inquiry.assigned``) or to a ``department`` (logistics, finance, quality), history kept."""

    event_type: ClassVar[str] = "inquiry.escalated"
    from_agent_id: str | None = None
    to_level: str | None = None
    department: Department | None = None
    reason: str = ""


class InquiryResolved(InquiryEvent):
    """The inquiry is closed as solved, by ``agent_id`` (``None`` when the bot answered it).
    ``resolution_seconds`` runs from ``opened_at``."""

    event_type: ClassVar[str] = "inquiry.resolved"
    agent_id: str | None = None
    by_bot: bool = False
    opened_at: datetime
    resolution_seconds: float


class InquiryReopened(InquiryEvent):
    """A resolved inquiry is open again (by ``agent_id``), back with that agent."""

    event_type: ClassVar[str] = "inquiry.reopened"
    agent_id: str | None = None
    reason: str = ""


class InquirySpamFiltered(InquiryEvent):
    """An advertisement or spam was dropped: closed at once, never counted in any KPI (no
    ``inquiry.received`` is emitted for it). ``refusal_sent``: the customer's one polite refusal
    went out with this one (later spam from the same customer is dropped silently)."""

    event_type: ClassVar[str] = "inquiry.spam_filtered"
    message_id: str
    confidence: float
    refusal_sent: bool


class InquirySlaWarning(InquiryEvent):
    """An SLA target (``sla``) is close to its breach at ``due_at``; emitted once per clock."""

    event_type: ClassVar[str] = "inquiry.sla_warning"
    sla: SlaKind
    due_at: datetime
    agent_id: str | None = None


class InquirySlaBreached(InquiryEvent):
    """An SLA target (``sla``) was missed: ``due_at`` passed with the clock still running.
    Emitted once per clock, also when the service was down at that moment (then late)."""

    event_type: ClassVar[str] = "inquiry.sla_breached"
    sla: SlaKind
    due_at: datetime
    agent_id: str | None = None


INQUIRY_EVENT_TYPES: tuple[type[InquiryEvent], ...] = (
    InquiryReceived,
    InquiryClassified,
    InquiryAutoAnswered,
    InquiryAssigned,
    InquiryAgentReplied,
    InquiryTransferred,
    InquiryEscalated,
    InquiryResolved,
    InquiryReopened,
    InquirySpamFiltered,
    InquirySlaWarning,
    InquirySlaBreached,
)
