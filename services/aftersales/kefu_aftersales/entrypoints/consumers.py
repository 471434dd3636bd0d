"""Kafka: commerce orders, inquiry events and marketplace reviews in, use cases called."""

from __future__ import annotations

from typing import Any

from kefu_shared import topics
from kefu_shared.contracts.aftersales import MarketplaceReview
from kefu_shared.contracts.inquiry import InquiryClassified, InquiryReceived
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.runtime import ServiceRuntime

from kefu_aftersales import handlers
from kefu_aftersales.handlers import Context, Deps
from kefu_aftersales.settings import AftersalesSettings


def _expect(envelope: Envelope[Any], contract: type[EventData]) -> None:
    expected = (contract.event_type, contract.event_version)
    if (envelope.type, envelope.version) != expected:
        raise PoisonMessage(
            f"type: expected {expected[0]} v{expected[1]}, got {envelope.type} v{envelope.version}"
        )


def _ctx(envelope: Envelope[Any]) -> Context:
    return Context(correlation_id=envelope.correlation_id, causation_id=envelope.id)


def register(runtime: ServiceRuntime, deps: Deps, settings: AftersalesSettings) -> None:
    async def on_commerce_order(envelope: Envelope[CommerceOrderEvent]) -> None:
        _expect(envelope, CommerceOrderEvent)
        await handlers.project_order(envelope.data, message_id=envelope.id, deps=deps)

    async def on_inquiry_event(envelope: Envelope[dict[str, Any]]) -> None:
        # Only two of the inquiry events matter here; the rest of the topic is skipped.
        if envelope.type == InquiryReceived.event_type:
            await handlers.remember_inquiry(envelope.payload(InquiryReceived), deps)
        elif envelope.type == InquiryClassified.event_type:
            await handlers.on_inquiry_classified(
                envelope.payload(InquiryClassified), deps, _ctx(envelope)
            )

    async def on_marketplace_review(envelope: Envelope[MarketplaceReview]) -> None:
        _expect(envelope, MarketplaceReview)
        await handlers.receive_review(envelope.data, deps, _ctx(envelope))

    # In batches, read at once (a return request may follow its order closely): one order's
    # steps in their order, CONSUMER_WORKERS orders at once.
    runtime.batch_subscriber(
        runtime.topic(topics.COMMERCE_ORDERS),
        model=Envelope[CommerceOrderEvent],
        handle=on_commerce_order,
        title="aftersales-commerce-orders",
        group_id=settings.group("orders"),
    )
    # Every inquiry event passes here and two kinds matter: in batches the broker may gather
    # for up to EVENT_FETCH_GATHER_MS, each still handled alone, one inquiry's in order.
    runtime.batch_subscriber(
        runtime.topic(topics.INQUIRY_EVENTS),
        model=Envelope[dict[str, Any]],
        handle=on_inquiry_event,
        title="aftersales-inquiry-events",
        group_id=settings.group("inquiries"),
        gather_ms=settings.event_fetch_gather_ms,
    )
    runtime.subscribe(
        topics.MARKETPLACE_REVIEWS,
        on_marketplace_review,
        group=settings.group("reviews"),
        title="aftersales-marketplace-reviews",
    )
