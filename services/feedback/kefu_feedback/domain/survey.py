"""A satisfaction survey: invited once per case, answered once, low ratings followed up.

Lifecycle::

    invited --notifier sent--> delivered --answer--> answered
       |  \\--notifier failed/suppressed--> undeliverable (an answer collected by phone
       |                                    still counts)
       \\-- (or, at creation) skipped: opted out, surveyed recently, too old, unreachable

A survey is created at most once per case (its id is derived from the case), so a reopened and
re-resolved inquiry, or a redelivered event, never sends a second invitation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum

from kefu_shared.contracts.feedback import Dimension, FollowUpRoute, SurveyKind
from pydantic import BaseModel, ConfigDict, Field

from kefu_feedback.domain.policy import SurveyPolicy

_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,150}$")


class SurveyError(ValueError):
    """The request cannot apply to this survey; the message names the field."""


class AlreadyAnswered(SurveyError):
    pass


class SurveyStatus(StrEnum):
    INVITED = "invited"
    SKIPPED = "skipped"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    ANSWERED = "answered"


class SkipReason(StrEnum):
    OPTED_OUT = "opted_out"
    RECENTLY_SURVEYED = "recently_surveyed"
    TOO_OLD = "too_old"
    UNREACHABLE = "unreachable"


def survey_id_for(kind: SurveyKind, ref: str, *, round_id: str | None = None) -> str:
    """``inquiry-<id>``, ``aftersales-<case id>``, ``round-<round>-<customer>``; a reference
    that is not URL- and key-safe is replaced by its hash (ids are path segments and keys)."""

    def safe(value: str) -> str:
        if _SAFE_REF.match(value):
            return value
        return hashlib.sha256(value.encode()).hexdigest()[:24]

    if kind is SurveyKind.ROUND:
        return f"round-{safe(round_id or '')}-{safe(ref)}"
    return f"{kind.value}-{safe(ref)}"


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)

    overall: int = Field(ge=1, le=5)
    ratings: dict[Dimension, int] = Field(default_factory=dict)
    comment: str = ""
    source: str
    answered_at: datetime

    def same_content(self, other: Answer) -> bool:
        return (self.overall, self.ratings, self.comment) == (
            other.overall,
            other.ratings,
            other.comment,
        )


class FollowUp(BaseModel):
    model_config = ConfigDict(frozen=True)

    low_dimensions: list[str]
    route: FollowUpRoute


class Survey(BaseModel):
    """One survey of one customer about one case (an inquiry, an after-sales case, a round)."""

    model_config = ConfigDict(frozen=True)

    survey_id: str
    kind: SurveyKind
    customer_id: str
    inquiry_id: str | None = None
    case_id: str | None = None
    round_id: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    category: str | None = None
    language: str = "zh-CN"
    status: SurveyStatus
    reason: str | None = None
    case_at: datetime
    """When the case ended (resolution, closing) or the round started: the KPI period key."""
    created_at: datetime
    delivered_at: datetime | None = None
    notification_channel: str | None = None
    sent_event_emitted: bool = False
    answer: Answer | None = None
    follow_up: FollowUp | None = None
    correlation_id: str = ""

    @property
    def invited(self) -> bool:
        """An invitation went to the notifier (whatever became of it)."""
        return self.status is not SurveyStatus.SKIPPED

    def delivered(self, at: datetime, channel: str) -> Survey:
        """The notifier sent the invitation. Also recorded after an early answer."""
        status = self.status
        if status in (SurveyStatus.INVITED, SurveyStatus.UNDELIVERABLE):
            status = SurveyStatus.DELIVERED
        return self.model_copy(
            update={
                "status": status,
                "delivered_at": self.delivered_at or at,
                "notification_channel": self.notification_channel or channel,
                "reason": None if status is SurveyStatus.DELIVERED else self.reason,
            }
        )

    def undeliverable(self, reason: str) -> Survey:
        if self.status is not SurveyStatus.INVITED:
            return self  # delivered or answered already: a late failure report changes nothing
        return self.model_copy(update={"status": SurveyStatus.UNDELIVERABLE, "reason": reason})

    def answered(self, answer: Answer, policy: SurveyPolicy) -> Survey:
        """Record the first answer; the same answer again is a no-op, a different one refused."""
        if self.status is SurveyStatus.SKIPPED:
            raise SurveyError(f"survey_id: {self.survey_id} was not sent ({self.reason})")
        if self.answer is not None:
            if self.answer.same_content(answer):
                return self
            raise AlreadyAnswered(f"survey_id: {self.survey_id} was already answered")
        return self.model_copy(
            update={
                "status": SurveyStatus.ANSWERED,
                "answer": answer,
                "follow_up": follow_up_for(self.kind, answer, policy),
            }
        )


def follow_up_for(kind: SurveyKind, answer: Answer, policy: SurveyPolicy) -> FollowUp | None:
    """A rating of 1-2 (overall or any dimension) needs a person to call the customer back."""
    low = [d.value for d, r in sorted(answer.ratings.items()) if r <= policy.low_rating]
    if answer.overall <= policy.low_rating:
        low.insert(0, "overall")
    if not low:
        return None
    after_sales = kind is SurveyKind.AFTERSALES or any(
        d in policy.after_sales_dimensions
        for d, r in answer.ratings.items()
        if r <= policy.low_rating
    )
    route = FollowUpRoute.AFTER_SALES if after_sales else FollowUpRoute.SUPERVISOR
    return FollowUp(low_dimensions=low, route=route)


class SurveyCustomer(BaseModel):
    """What the feedback service knows of a customer's survey history and wishes."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    opted_out: bool = False
    last_invited_at: datetime | None = None
    last_survey_id: str | None = None


def skip_reason(
    customer: SurveyCustomer,
    survey_id: str,
    case_at: datetime,
    now: datetime,
    policy: SurveyPolicy,
) -> SkipReason | None:
    """Why this customer must not get this survey now, or None if they may."""
    if customer.last_survey_id == survey_id:
        return None  # reserved by an earlier attempt that did not finish: go on with it
    if customer.opted_out:
        return SkipReason.OPTED_OUT
    if now - case_at > timedelta(hours=policy.max_age_hours):
        return SkipReason.TOO_OLD
    last = customer.last_invited_at
    # Either direction: events of two cases may be processed out of order.
    if last is not None and abs(case_at - last) < timedelta(days=policy.cooldown_days):
        return SkipReason.RECENTLY_SURVEYED
    return None


def reserve(customer: SurveyCustomer, survey_id: str, case_at: datetime) -> SurveyCustomer:
    last = customer.last_invited_at
    return customer.model_copy(
        update={
            "last_invited_at": case_at if last is None else max(last, case_at),
            "last_survey_id": survey_id,
        }
    )


def card_numbers_redacted(text: str) -> str:
    """Never keep card numbers (DOMAIN.md 6), not even in a survey comment."""
    return re.sub(r"\b(?:\d[ -]?){12,18}\d\b", "[card number removed]", text)


def ratings_from(raw: Mapping[str, int]) -> dict[Dimension, int]:
    """Dimension names from the outside world, validated (the error names the field)."""
    out: dict[Dimension, int] = {}
    for name, rating in raw.items():
        try:
            dimension = Dimension(name)
        except ValueError as exc:
            raise SurveyError(f"ratings.{name}: unknown dimension") from exc
        if not isinstance(rating, int) or not 1 <= rating <= 5:
            raise SurveyError(f"ratings.{name}: rating must be an integer 1..5")
        out[dimension] = rating
    return out
