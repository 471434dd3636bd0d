"""Facts: what happened, one record per real-world occurrence, keyed by its natural id.

Why facts and not counters: events arrive at least once and, across topics, in any order. A
counter bumped per event double-counts a redelivery, and FerretDB does not even apply
concurrent ``$inc`` atomically. A fact whose id is its natural key (the reply id, the order id,
the inquiry id + the time of the resolution...) is inserted once: a duplicate insert is refused
by the unique ``_id`` on every server. KPIs are then functions of the set of facts, which does
not depend on the order they arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class FactKind(StrEnum):
    OPENED = "opened"
    """An inquiry was opened: customer, channel, language, first message (for KB misses)."""
    MESSAGE = "message"
    """A customer message was recorded (the load, for peak hours); channel = where it came."""
    CLASSIFIED = "classified"
    AUTO_ANSWERED = "auto_answered"
    REPLY = "reply"
    """An agent replied; ``seconds`` = response time, ``first`` = the inquiry's first reply."""
    RESOLVED = "resolved"
    """``seconds`` = resolution time from opening; ``by_bot`` when the bot answered it."""
    REOPENED = "reopened"
    SLA_BREACHED = "sla_breached"
    SPAM = "spam"
    DEAL = "deal"
    """One attribution decision of a paid order (``revision``); the latest one counts, and it
    is a deal when it names an agent (conversion's numerator)."""
    DEAL_CANCELLED = "deal_cancelled"
    """The order was fully refunded or its attribution revoked: no longer a deal."""
    LOST_ORDER = "lost_order"
    """An unpaid order nobody followed up within 20 minutes; counts against the on-duty agent."""
    LOSS_RECOVERED = "loss_recovered"
    """An order counted lost was paid after all: it is not lost any more."""
    AFTERSALES_CLOSED = "aftersales_closed"


@dataclass(frozen=True)
class Fact:
    """One fact. Fields that do not apply to a kind stay None."""

    id: str
    kind: FactKind
    at: datetime
    inquiry_id: str | None = None
    customer_id: str | None = None
    channel: str | None = None
    """The inquiry's channel; for MESSAGE the channel the message came on."""
    category: str | None = None
    agent_id: str | None = None
    order_id: str | None = None
    seconds: float | None = None
    first: bool | None = None
    by_bot: bool | None = None
    sla: str | None = None
    due_at: datetime | None = None
    started_at: datetime | None = None
    """OPENED: when the inquiry was opened; RESOLVED: the inquiry's opening time."""
    language: str | None = None
    text: str | None = None
    """OPENED: the first message (truncated); AUTO_ANSWERED: the article id."""
    revision: int | None = None
    """DEAL: the attribution's revision (the highest wins)."""


MAX_TEXT_CHARS = 200
"""The first message is kept only to find frequent questions; a short prefix is enough."""
