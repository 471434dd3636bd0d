"""The inquiry aggregate: one customer's open conversation, across channels, and its rules.

Every transition is a pure function ``(inquiry, command, now) -> Decision``: the new state, the
events other services see, and the notices the customer should get. The handlers store the state
and put events and notices into the outbox in one write.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kefu_shared.contracts.inquiry import (
    Category,
    Contact,
    Department,
    InquiryAgentReplied,
    InquiryAssigned,
    InquiryAutoAnswered,
    InquiryClassified,
    InquiryEscalated,
    InquiryEvent,
    InquiryReceived,
    InquiryReopened,
    InquiryResolved,
    InquirySlaBreached,
    InquirySlaWarning,
    InquirySpamFiltered,
    InquiryTransferred,
    SlaKind,
)
from kefu_shared.topics import Channel
from pydantic import BaseModel, Field

from kefu_inquiry.domain import sla
from kefu_inquiry.domain.classification import Classification
from kefu_inquiry.domain.knowledge import NEVER_BOT_ANSWERED, Match
from kefu_inquiry.domain.routing import Agent, Level, RoutingNeed


class Status(StrEnum):
    QUEUED = "queued"  # waiting for an agent
    ASSIGNED = "assigned"  # an agent has it
    ESCALATED = "escalated"  # with a department outside customer service
    RESOLVED = "resolved"
    SPAM = "spam"


OPEN_STATUSES = frozenset({Status.QUEUED, Status.ASSIGNED, Status.ESCALATED})


class Author(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    BOT = "bot"


class DomainError(Exception):
    """A command that does not fit the inquiry's state (HTTP 409) or names nothing (404)."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class Message(BaseModel):
    message_id: str
    author: Author
    author_id: str | None = None
    channel: Channel
    content: str
    sent_at: datetime
    quick_reply_id: str | None = None


class HistoryEntry(BaseModel):
    """Who had the inquiry and why it moved: kept with the case through every handover."""

    at: datetime
    action: str
    agent_id: str | None = None
    to_agent_id: str | None = None
    department: Department | None = None
    note: str = ""


class Inquiry(BaseModel):
    id: str
    customer_id: str
    customer_name: str = ""
    contact: Contact = Field(default_factory=Contact)
    channel: Channel
    channels: list[Channel] = Field(default_factory=list)
    order_reference: str | None = None
    language: str = "zh"
    category: Category | None = None
    confidence: float = 0.0
    needs_human: bool = False
    status: Status = Status.QUEUED
    agent_id: str | None = None
    agent_level: Level | None = None
    required_level: Level = Level.AGENT
    excluded_agents: list[str] = Field(default_factory=list)
    department: Department | None = None
    opened_at: datetime
    queued_at: datetime | None = None
    resolved_at: datetime | None = None
    first_response_at: datetime | None = None
    unanswered_since: datetime | None = None
    messages: list[Message] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
    clocks: list[sla.SlaClock] = Field(default_factory=list)
    sla_next_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def routing_need(self) -> RoutingNeed:
        return RoutingNeed(
            category=self.category,
            language=self.language,
            level=self.required_level,
            triage=self.needs_human,
            excluded=frozenset(self.excluded_agents),
        )

    def to_state(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Inquiry:
        return cls.model_validate(state)


@dataclass(frozen=True)
class Notice:
    """Something the customer must be told; the handler turns it into a notification request."""

    purpose: str  # the notifier's purpose: bot_answer | inquiry_reply
    template: str
    parameters: dict[str, str]
    idempotency_key: str


@dataclass
class Decision:
    inquiry: Inquiry
    events: list[InquiryEvent] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


def inquiry_id_for(message_id: str) -> str:
    """Deterministic, so a redelivered first message opens the same inquiry, never a second."""
    return "inq-" + hashlib.sha256(message_id.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class IncomingMessage:
    message_id: str
    channel: Channel
    customer_id: str
    customer_name: str
    contact: Contact
    content: str  # already redacted
    order_reference: str | None
    language: str | None
    sent_at: datetime


def _base(inquiry: Inquiry, now: datetime) -> dict[str, Any]:
    return {
        "inquiry_id": inquiry.id,
        "customer_id": inquiry.customer_id,
        "channel": inquiry.channel,
        "category": inquiry.category,
        "occurred_at": now,
    }


def _with_clocks(inquiry: Inquiry, clocks: list[sla.SlaClock]) -> Inquiry:
    return inquiry.model_copy(update={"clocks": clocks, "sla_next_at": sla.next_deadline(clocks)})


def _start(
    clocks: list[sla.SlaClock],
    kind: SlaKind,
    now: datetime,
    targets: sla.SlaTargets,
    warn_ratio: float,
) -> list[sla.SlaClock]:
    target = targets.of(kind)
    if target is None:
        return clocks
    return [*clocks, sla.SlaClock.start(kind, now, target, warn_ratio)]


def _stop(clocks: list[sla.SlaClock], kind: SlaKind, now: datetime) -> list[sla.SlaClock]:
    return [c.stop(now) if c.kind is kind else c for c in clocks]


def open_spam(
    msg: IncomingMessage, classification: Classification, refusal: Notice | None, now: datetime
) -> Decision:
    """Spam never becomes a real inquiry: recorded closed, no clocks, not in any statistics."""
    inquiry = Inquiry(
        id=inquiry_id_for(msg.message_id),
        customer_id=msg.customer_id,
        customer_name=msg.customer_name,
        channel=msg.channel,
        channels=[msg.channel],
        language=classification.language,
        category=Category.SPAM,
        confidence=classification.confidence,
        status=Status.SPAM,
        opened_at=now,
        resolved_at=now,
        messages=[_customer_message(msg)],
    )
    event = InquirySpamFiltered(
        **_base(inquiry, now),
        message_id=msg.message_id,
        confidence=classification.confidence,
        refusal_sent=refusal is not None,
    )
    return Decision(inquiry, [event], [refusal] if refusal else [])


def _customer_message(msg: IncomingMessage) -> Message:
    return Message(
        message_id=msg.message_id,
        author=Author.CUSTOMER,
        author_id=msg.customer_id,
        channel=msg.channel,
        content=msg.content,
        sent_at=msg.sent_at,
    )


def open_inquiry(
    inquiry_id: str,
    msg: IncomingMessage,
    classification: Classification,
    answer: Match | None,
    policy: sla.SlaPolicy,
    now: datetime,
    *,
    bot_min_score: float,
) -> Decision:
    """A first message: classify, answer by bot if it can, else queue for an agent."""
    inquiry = Inquiry(
        id=inquiry_id,
        customer_id=msg.customer_id,
        customer_name=msg.customer_name,
        contact=msg.contact,
        channel=msg.channel,
        channels=[msg.channel],
        order_reference=msg.order_reference,
        language=classification.language,
        category=classification.category,
        confidence=classification.confidence,
        needs_human=classification.needs_human,
        opened_at=now,
        unanswered_since=msg.sent_at,
        messages=[_customer_message(msg)],
    )
    received = InquiryReceived(
        **_base(inquiry, now),
        message_id=msg.message_id,
        message_channel=msg.channel,
        opened=True,
        content=msg.content,
        order_reference=msg.order_reference,
        language=inquiry.language,
        sent_at=msg.sent_at,
    )
    classified = InquiryClassified(
        **_base(inquiry, now),
        confidence=classification.confidence,
        language=inquiry.language,
        needs_human=classification.needs_human,
    )
    events: list[InquiryEvent] = [received, classified]
    bot_can_answer = (
        answer is not None
        and answer.score >= bot_min_score
        and not classification.needs_human
        and classification.category not in NEVER_BOT_ANSWERED
    )
    if bot_can_answer and answer is not None:
        reply_id = f"{inquiry.id}:bot:1"
        inquiry = inquiry.model_copy(
            update={
                "status": Status.RESOLVED,
                "resolved_at": now,
                "first_response_at": now,
                "unanswered_since": None,
                "messages": [
                    *inquiry.messages,
                    Message(
                        message_id=reply_id,
                        author=Author.BOT,
                        channel=msg.channel,
                        content=answer.article.answer,
                        sent_at=now,
                    ),
                ],
                "history": [HistoryEntry(at=now, action="auto_answered", note=answer.article.id)],
            }
        )
        events += [
            InquiryAutoAnswered(
                **_base(inquiry, now),
                article_id=answer.article.id,
                score=answer.score,
                message_id=reply_id,
            ),
            InquiryResolved(
                **_base(inquiry, now),
                by_bot=True,
                opened_at=inquiry.opened_at,
                resolution_seconds=0.0,
            ),
        ]
        notice = Notice(
            "bot_answer",
            "bot_answer",
            {"question": answer.article.question, "answer": answer.article.answer},
            reply_id,
        )
        return Decision(inquiry, events, [notice])
    targets = policy.targets(inquiry.channel.value, inquiry.category)
    clocks = _start([], SlaKind.FIRST_RESPONSE, now, targets, policy.warn_ratio)
    clocks = _start(clocks, SlaKind.RESOLUTION, now, targets, policy.warn_ratio)
    inquiry = _with_clocks(inquiry.model_copy(update={"queued_at": now}), clocks)
    return Decision(inquiry, events)


def add_customer_message(
    inquiry: Inquiry, msg: IncomingMessage, policy: sla.SlaPolicy, now: datetime
) -> Decision:
    """A follow-up, on any channel: joins the history; if the agent had answered, the
    next-response clock starts (the customer is waiting again)."""
    if not inquiry.is_open:
        raise DomainError(f"inquiry {inquiry.id} is closed")
    channels = (
        inquiry.channels if msg.channel in inquiry.channels else [*inquiry.channels, msg.channel]
    )
    clocks = inquiry.clocks
    waiting_again = inquiry.unanswered_since is None
    if waiting_again and inquiry.first_response_at is not None:
        targets = policy.targets(inquiry.channel.value, inquiry.category)
        clocks = _start(clocks, SlaKind.NEXT_RESPONSE, now, targets, policy.warn_ratio)
    updated = _with_clocks(
        inquiry.model_copy(
            update={
                "channels": channels,
                "messages": [*inquiry.messages, _customer_message(msg)],
                "unanswered_since": inquiry.unanswered_since or msg.sent_at,
                "order_reference": inquiry.order_reference or msg.order_reference,
            }
        ),
        clocks,
    )
    event = InquiryReceived(
        **_base(updated, now),
        message_id=msg.message_id,
        message_channel=msg.channel,
        opened=False,
        content=msg.content,
        order_reference=msg.order_reference,
        language=updated.language,
        sent_at=msg.sent_at,
        agent_id=updated.agent_id,
    )
    return Decision(updated, [event])


def assign(
    inquiry: Inquiry, agent: Agent, now: datetime, *, previous: str | None = None
) -> Decision:
    if inquiry.status is not Status.QUEUED:
        raise DomainError(f"inquiry {inquiry.id} is not waiting for an agent")
    waited = (now - (inquiry.queued_at or now)).total_seconds()
    updated = inquiry.model_copy(
        update={
            "status": Status.ASSIGNED,
            "agent_id": agent.id,
            "agent_level": agent.level,
            "history": [
                *inquiry.history,
                HistoryEntry(at=now, action="assigned", agent_id=agent.id),
            ],
        }
    )
    event = InquiryAssigned(
        **_base(updated, now),
        agent_id=agent.id,
        agent_level=agent.level.value,
        queued_seconds=max(waited, 0.0),
        previous_agent_id=previous,
    )
    return Decision(updated, [event])


def _require_agent(inquiry: Inquiry, agent_id: str) -> None:
    if inquiry.status is not Status.ASSIGNED or inquiry.agent_id != agent_id:
        raise DomainError(f"inquiry {inquiry.id} is not with agent {agent_id}")


def reply(
    inquiry: Inquiry,
    agent_id: str,
    text: str,
    reply_id: str,
    now: datetime,
    quick_reply_id: str | None = None,
    agent_name: str = "",
) -> Decision:
    """An agent's answer: stops the response clocks and goes to the customer."""
    _require_agent(inquiry, agent_id)
    first = inquiry.first_response_at is None
    since = inquiry.unanswered_since or now
    clocks = _stop(inquiry.clocks, SlaKind.FIRST_RESPONSE, now)
    clocks = _stop(clocks, SlaKind.NEXT_RESPONSE, now)
    updated = _with_clocks(
        inquiry.model_copy(
            update={
                "first_response_at": inquiry.first_response_at or now,
                "unanswered_since": None,
                "messages": [
                    *inquiry.messages,
                    Message(
                        message_id=reply_id,
                        author=Author.AGENT,
                        author_id=agent_id,
                        channel=inquiry.channels[-1] if inquiry.channels else inquiry.channel,
                        content=text,
                        sent_at=now,
                        quick_reply_id=quick_reply_id,
                    ),
                ],
            }
        ),
        clocks,
    )
    event = InquiryAgentReplied(
        **_base(updated, now),
        agent_id=agent_id,
        reply_id=reply_id,
        quick_reply_id=quick_reply_id,
        first_response=first,
        response_seconds=max((now - since).total_seconds(), 0.0),
    )
    return Decision(
        updated,
        [event],
        [
            Notice(
                "inquiry_reply",
                "inquiry_reply",
                {"inquiry_id": inquiry.id, "agent_name": agent_name, "reply": text},
                reply_id,
            )
        ],
    )


def transfer(inquiry: Inquiry, from_agent: str, to: Agent, reason: str, now: datetime) -> Decision:
    _require_agent(inquiry, from_agent)
    if to.id == from_agent:
        raise DomainError("cannot transfer an inquiry to the agent who has it")
    entry = HistoryEntry(
        at=now, action="transferred", agent_id=from_agent, to_agent_id=to.id, note=reason
    )
    updated = inquiry.model_copy(
        update={"agent_id": to.id, "agent_level": to.level, "history": [*inquiry.history, entry]}
    )
    base = _base(updated, now)
    return Decision(
        updated,
        [
            InquiryTransferred(**base, from_agent_id=from_agent, agent_id=to.id, reason=reason),
            InquiryAssigned(
                **base,
                agent_id=to.id,
                agent_level=to.level.value,
                queued_seconds=0.0,
                previous_agent_id=from_agent,
            ),
        ],
    )


def escalate(
    inquiry: Inquiry,
    from_agent: str,
    department: Department | None,
    reason: str,
    now: datetime,
) -> Decision:
    """To a department (it leaves the agents' queues) or, without one, to a senior agent (back
    in the queue for seniors only; the escalating agent will not get it back)."""
    _require_agent(inquiry, from_agent)
    entry = HistoryEntry(
        at=now, action="escalated", agent_id=from_agent, department=department, note=reason
    )
    update: dict[str, Any] = {"history": [*inquiry.history, entry], "agent_id": None}
    if department is not None:
        update |= {"status": Status.ESCALATED, "department": department}
    else:
        update |= {
            "status": Status.QUEUED,
            "queued_at": now,
            "required_level": Level.SENIOR,
            "excluded_agents": sorted({*inquiry.excluded_agents, from_agent}),
        }
    updated = inquiry.model_copy(update=update)
    event = InquiryEscalated(
        **_base(updated, now),
        from_agent_id=from_agent,
        to_level=None if department else Level.SENIOR.value,
        department=department,
        reason=reason,
    )
    return Decision(updated, [event])


def resolve(inquiry: Inquiry, agent_id: str | None, now: datetime) -> Decision:
    """Closed as solved by the agent who has it (or, escalated, by the department)."""
    if inquiry.status is Status.ASSIGNED:
        if agent_id is None or inquiry.agent_id != agent_id:
            raise DomainError(f"inquiry {inquiry.id} is not with agent {agent_id}")
    elif inquiry.status is not Status.ESCALATED and inquiry.status is not Status.QUEUED:
        raise DomainError(f"inquiry {inquiry.id} is {inquiry.status.value}")
    clocks = [c.stop(now) for c in inquiry.clocks]
    entry = HistoryEntry(at=now, action="resolved", agent_id=agent_id)
    updated = _with_clocks(
        inquiry.model_copy(
            update={
                "status": Status.RESOLVED,
                "resolved_at": now,
                "history": [*inquiry.history, entry],
            }
        ),
        clocks,
    )
    event = InquiryResolved(
        **_base(updated, now),
        agent_id=agent_id,
        opened_at=inquiry.opened_at,
        resolution_seconds=max((now - inquiry.opened_at).total_seconds(), 0.0),
    )
    return Decision(updated, [event])


def reopen(
    inquiry: Inquiry,
    agent: Agent | None,
    reason: str,
    policy: sla.SlaPolicy,
    now: datetime,
) -> Decision:
    """Back to the agent who reopens it, or to the queue; a fresh resolution clock starts."""
    if inquiry.status is not Status.RESOLVED:
        raise DomainError(f"only a resolved inquiry can be reopened ({inquiry.status.value})")
    targets = policy.targets(inquiry.channel.value, inquiry.category)
    clocks = _start(
        [c for c in inquiry.clocks if c.kind is not SlaKind.RESOLUTION],
        SlaKind.RESOLUTION,
        now,
        targets,
        policy.warn_ratio,
    )
    entry = HistoryEntry(
        at=now, action="reopened", agent_id=agent.id if agent else None, note=reason
    )
    update: dict[str, Any] = {
        "resolved_at": None,
        "department": None,
        "history": [*inquiry.history, entry],
    }
    if agent is not None:
        update |= {"status": Status.ASSIGNED, "agent_id": agent.id, "agent_level": agent.level}
    else:
        update |= {"status": Status.QUEUED, "agent_id": None, "queued_at": now}
    updated = _with_clocks(inquiry.model_copy(update=update), clocks)
    event = InquiryReopened(
        **_base(updated, now), agent_id=agent.id if agent else None, reason=reason
    )
    return Decision(updated, [event])


def fire_sla(inquiry: Inquiry, now: datetime) -> Decision:
    """Warnings and breaches that are due, each once (the flags are stored with the clocks)."""
    clocks, alarms = sla.tick(inquiry.clocks, now)
    updated = _with_clocks(inquiry, clocks)
    events: list[InquiryEvent] = []
    for alarm in alarms:
        cls = InquirySlaBreached if alarm.breach else InquirySlaWarning
        events.append(
            cls(
                **_base(updated, now),
                sla=alarm.kind,
                due_at=alarm.due_at,
                agent_id=inquiry.agent_id,
            )
        )
    return Decision(updated, events)


SPAM_REFUSAL = {
    "zh": "您好，本店客服只处理商品、订单和售后相关的咨询，暂不接受广告或合作推广，感谢理解。",
    "en": "Hello, this service handles questions about our products, orders and after-sales only; "
    "we do not accept advertising or promotion offers. Thank you for understanding.",
}


def spam_refusal(inquiry_id: str, customer_id: str, language: str) -> Notice:
    """The handbook's one polite refusal; the key is per customer, so it never goes out twice."""
    text = SPAM_REFUSAL.get(language, SPAM_REFUSAL["en"])
    name = "客服" if language == "zh" else "Customer service"
    return Notice(
        "inquiry_reply",
        "inquiry_reply",
        {"inquiry_id": inquiry_id, "agent_name": name, "reply": text},
        "inquiry:spam-refusal:" + hashlib.sha256(customer_id.encode()).hexdigest()[:24],
    )
