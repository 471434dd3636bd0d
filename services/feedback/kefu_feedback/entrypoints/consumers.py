"""Kafka: other services' events and survey answers in, use cases called, nothing else.

Each topic has its own consumer group (``kefu-feedback-<source>``), so a slow topic (a burst of
inquiry events on a shopping festival) never holds the others back. Event types this service
does not use are skipped; a known type that fails its contract goes to the DLQ with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from kefu_shared import topics
from kefu_shared.contracts.aftersales import AFTERSALES_EVENT_TYPES, AftersalesEvent
from kefu_shared.contracts.feedback import SURVEY_ANSWERS_TOPIC, SurveyAnswerSubmitted
from kefu_shared.contracts.inquiry import INQUIRY_EVENT_TYPES, InquiryEvent
from kefu_shared.contracts.notifier import (
    NotificationFailed,
    NotificationSent,
    NotificationSuppressed,
)
from kefu_shared.contracts.orders import ORDER_EVENT_TYPES, OrderEvent
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.runtime import ServiceRuntime

from kefu_feedback import handlers
from kefu_feedback.domain.survey import (
    AlreadyAnswered,
    Answer,
    SurveyError,
    card_numbers_redacted,
)
from kefu_feedback.handlers import Context, Deps

log = logging.getLogger(__name__)

RawEnvelope = Envelope[dict[str, Any]]


def _contract(envelope: RawEnvelope, known: Iterable[type[EventData]]) -> EventData | None:
    """The envelope's data as its contract, or None for events this service does not use."""
    for cls in known:
        if cls.event_type == envelope.type:
            if envelope.version != cls.event_version:
                # A new version is published beside the old one: we keep reading the old.
                log.info(
                    "skipping %s v%d (reading v%d)",
                    envelope.type,
                    envelope.version,
                    cls.event_version,
                )
                return None
            return envelope.payload(cls)  # ValidationError -> DLQ with the reason
    return None


def _ctx(envelope: RawEnvelope) -> Context:
    return Context(correlation_id=envelope.correlation_id, causation_id=envelope.id)


def register(runtime: ServiceRuntime, deps: Deps, *, gather_ms: int) -> None:
    base = runtime.settings.consumer_group or f"kefu-{runtime.name}"

    async def on_inquiry_event(envelope: RawEnvelope) -> None:
        event = _contract(envelope, INQUIRY_EVENT_TYPES)
        if isinstance(event, InquiryEvent):
            await handlers.record_inquiry_event(event, _ctx(envelope), deps)

    async def on_order_event(envelope: RawEnvelope) -> None:
        event = _contract(envelope, ORDER_EVENT_TYPES)
        if isinstance(event, OrderEvent):
            await handlers.record_order_event(event, deps)

    async def on_aftersales_event(envelope: RawEnvelope) -> None:
        event = _contract(envelope, AFTERSALES_EVENT_TYPES)
        if isinstance(event, AftersalesEvent):
            await handlers.record_aftersales_event(event, _ctx(envelope), deps)

    async def on_notifier_event(envelope: RawEnvelope) -> None:
        event = _contract(envelope, (NotificationSent, NotificationFailed, NotificationSuppressed))
        if isinstance(event, NotificationSent | NotificationFailed | NotificationSuppressed):
            await handlers.record_delivery(event, _ctx(envelope), deps)

    async def on_survey_answer(envelope: Envelope[SurveyAnswerSubmitted]) -> None:
        expected = (SurveyAnswerSubmitted.event_type, SurveyAnswerSubmitted.event_version)
        if (envelope.type, envelope.version) != expected:
            raise PoisonMessage(
                f"type: expected {expected[0]} v{expected[1]}, got {envelope.type} "
                f"v{envelope.version}"
            )
        data = envelope.data
        answer = Answer(
            overall=data.overall,
            ratings=dict(data.ratings),
            comment=card_numbers_redacted(data.comment),
            source=f"topic:{data.collected_by}",
            answered_at=data.answered_at,
        )
        try:
            await handlers.answer_survey(data.survey_id, answer, data.submission_id, deps)
        except (AlreadyAnswered, SurveyError) as exc:
            raise PoisonMessage(str(exc)) from exc

    # Other services' events: every one of them passes here, most of them to record one fact,
    # and nobody waits on a KPI by the millisecond. In batches, gathered by the broker for up to
    # ``gather_ms``: a trickle costs a fetch and an offset commit per batch, not per event.
    subscriptions: list[tuple[str, str, Any, Callable[..., Awaitable[None]], int]] = [
        (topics.INQUIRY_EVENTS, "inquiry", RawEnvelope, on_inquiry_event, gather_ms),
        (topics.ORDERS_EVENTS, "orders", RawEnvelope, on_order_event, gather_ms),
        (topics.AFTERSALES_EVENTS, "aftersales", RawEnvelope, on_aftersales_event, gather_ms),
        (topics.NOTIFIER_EVENTS, "notifier", RawEnvelope, on_notifier_event, gather_ms),
        # An answer is acknowledged where it was given; it still need not wait for company.
        (SURVEY_ANSWERS_TOPIC, "answers", Envelope[SurveyAnswerSubmitted], on_survey_answer, 0),
    ]
    for topic, source, model, handler, gather in subscriptions:
        # Each record still handled alone (retries, dead letter); one key's records in order.
        runtime.batch_subscriber(
            runtime.topic(topic),
            model=model,
            handle=handler,
            title=f"feedback-{source}",
            group_id=f"{base}-{source}",
            gather_ms=gather,
        )
