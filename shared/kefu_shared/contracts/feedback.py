"""Contracts of the feedback service: survey answers it accepts and the survey events it emits.

Inbound: ``SurveyAnswerSubmitted`` (v1) on ``SURVEY_ANSWERS_TOPIC`` (``kefu.feedback.answers``),
written by trusted systems that collect answers themselves (a phone follow-up, the marketplace's
rating form, the shop's app). Subject (Kafka key) = survey id. Customers answering through the
link in their invitation use ``POST /surveys/{survey_id}/answers`` instead (with the link's token).

Outbound: the ``survey.*`` events on ``topics.FEEDBACK_EVENTS``; subject = survey id (the round
id for ``survey.round_started``), so one survey's events stay in order on one partition. Every
event is written with the change that caused it (outbox) and carries a deterministic envelope
id, so a redelivered input never yields a second event. Within v1 changes are additive only.

Ratings are five-level: 1 very dissatisfied, 2 dissatisfied, 3 neutral, 4 satisfied, 5 very
satisfied (DOMAIN.md 4.1). CSAT counts 4 and 5 as satisfied.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field, field_validator

from kefu_shared import topics
from kefu_shared.envelope import EventData

SURVEY_ANSWERS_TOPIC = topics.SURVEY_ANSWERS
"""Inbound survey answers from trusted collectors."""

SURVEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
"""A survey id is also a URL path segment and the notifier's idempotency key."""

MAX_COMMENT_CHARS = 2000

Rating = int
"""1 (very dissatisfied) .. 5 (very satisfied)."""


class Dimension(StrEnum):
    """What a survey asks about, each on the five-level scale (DOMAIN.md 4.1)."""

    PRODUCT_QUALITY = "product_quality"
    SERVICE_EFFICIENCY = "service_efficiency"
    PRICE = "price"
    USER_EXPERIENCE = "user_experience"
    AFTER_SALES_SERVICE = "after_sales_service"


class SurveyKind(StrEnum):
    """Why the survey was sent."""

    INQUIRY = "inquiry"
    """After an inquiry was resolved (once per inquiry, also if it is reopened and resolved)."""
    AFTERSALES = "aftersales"
    """After an after-sales case closed (once per case)."""
    ROUND = "round"
    """Part of a periodic (at least quarterly) survey round over a sample of customers."""


class FollowUpRoute(StrEnum):
    """Who should pick a low rating up."""

    SUPERVISOR = "supervisor"
    AFTER_SALES = "after_sales"


class SurveyEvent(EventData):
    """Fields common to the per-survey events."""

    topic: ClassVar[str] = topics.FEEDBACK_EVENTS
    subject_field: ClassVar[str] = "survey_id"

    survey_id: str = Field(description="e.g. 'inquiry-<inquiry id>', 'aftersales-<case id>'.")
    kind: SurveyKind
    customer_id: str
    inquiry_id: str | None = Field(default=None, description="For inquiry surveys.")
    case_id: str | None = Field(default=None, description="For after-sales surveys.")
    round_id: str | None = Field(default=None, description="For survey-round surveys.")
    agent_id: str | None = Field(
        default=None,
        description="The agent who resolved the inquiry (None: the bot, or not an inquiry).",
    )
    channel: str | None = Field(
        default=None, description="The inquiry's channel (chat, phone, ...), if any."
    )


class SurveySent(SurveyEvent):
    """Emitted once per survey, when the notifier reports the invitation delivered
    (``notification.sent`` for idempotency key = ``survey_id``). ``notification_channel`` is how
    it reached the customer. Surveys the notifier could not deliver are never ``sent``."""

    event_type: ClassVar[str] = "survey.sent"

    notification_channel: str
    sent_at: datetime


class SurveyAnswered(SurveyEvent):
    """Emitted once per survey, when its (first valid) answer arrives. ``overall`` and the
    ``ratings`` of the dimensions the customer rated are 1..5; ``comment`` is free text
    (card numbers redacted). ``source``: ``link`` (HTTP) or ``topic`` (a trusted collector)."""

    event_type: ClassVar[str] = "survey.answered"

    overall: int = Field(ge=1, le=5)
    ratings: dict[Dimension, int] = Field(default_factory=dict)
    comment: str = ""
    source: str
    answered_at: datetime


class SurveyFollowUpRaised(SurveyEvent):
    """Emitted once per survey, with ``survey.answered``, when the overall rating or any
    dimension is 1 or 2. ``low_dimensions`` lists the dimensions rated 1-2 (``overall`` included
    as ``"overall"``); ``route`` says who should call the customer back: ``after_sales`` for
    after-sales surveys or a low after-sales-service / product-quality rating, else
    ``supervisor``."""

    event_type: ClassVar[str] = "survey.follow_up_raised"

    overall: int = Field(ge=1, le=5)
    low_dimensions: list[str]
    comment: str = ""
    route: FollowUpRoute
    raised_at: datetime


class SurveyRoundStarted(EventData):
    """Emitted once per round when it starts: ``sampled`` customers were drawn from the
    ``population`` of customers served in the ``lookback_days`` before ``started_at`` (opted-out
    and recently surveyed customers excluded); their invitations follow as ``round`` surveys."""

    event_type: ClassVar[str] = "survey.round_started"
    topic: ClassVar[str] = topics.FEEDBACK_EVENTS
    subject_field: ClassVar[str] = "round_id"

    round_id: str
    requested_sample_size: int = Field(ge=1)
    sampled: int = Field(ge=0)
    population: int = Field(ge=0)
    lookback_days: int = Field(ge=1)
    started_at: datetime


class SurveyAnswerSubmitted(EventData):
    """An answer collected outside the survey link (consumed, not emitted), on
    ``kefu.feedback.answers``. ``submission_id`` is the deduplication key; the first valid
    answer of a survey counts, later different ones are refused (DLQ with the reason)."""

    event_type: ClassVar[str] = "survey.answer_submitted"
    topic: ClassVar[str] = SURVEY_ANSWERS_TOPIC
    subject_field: ClassVar[str] = "survey_id"

    survey_id: str = Field(pattern=SURVEY_ID_PATTERN)
    submission_id: str = Field(min_length=1, max_length=200)
    overall: int = Field(ge=1, le=5, description="Overall satisfaction, 1..5.")
    ratings: dict[Dimension, int] = Field(
        default_factory=dict, description="Per-dimension ratings 1..5; unrated ones omitted."
    )
    comment: str = Field(default="", max_length=MAX_COMMENT_CHARS)
    collected_by: str = Field(
        min_length=1, max_length=64, description="e.g. 'phone_follow_up', 'marketplace'."
    )
    answered_at: datetime

    @field_validator("ratings")
    @classmethod
    def _five_levels(cls, value: dict[Dimension, int]) -> dict[Dimension, int]:
        for dimension, rating in value.items():
            if not 1 <= rating <= 5:
                raise ValueError(f"{dimension.value}: rating must be 1..5, got {rating}")
        return value

    @field_validator("answered_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone")
        return value


FEEDBACK_EVENT_TYPES: tuple[type[EventData], ...] = (
    SurveySent,
    SurveyAnswered,
    SurveyFollowUpRaised,
    SurveyRoundStarted,
)
