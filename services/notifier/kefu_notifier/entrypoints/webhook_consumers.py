"""Kafka: kefu's event topics in, fanned out to webhook subscriptions, nothing else.

A consumer group of its own (``webhook_consumer_group``), so the webhook fan-out keeps its own
offsets and scales apart from customer notifications.
"""

from __future__ import annotations

from typing import Any

from kefu_shared import topics
from kefu_shared.envelope import Envelope
from kefu_shared.runtime import ServiceRuntime

from kefu_notifier.webhook_handlers import WebhookDeps, fan_out

WEBHOOK_SOURCE_TOPICS = (
    topics.INQUIRY_EVENTS,
    topics.ORDERS_EVENTS,
    topics.AFTERSALES_EVENTS,
    topics.FEEDBACK_EVENTS,
    topics.NOTIFIER_EVENTS,
)
"""Every topic of published kefu events (the topics of ``topics.EVENTS_TOPIC_OF_SERVICE``)."""


def register_webhook_consumers(
    runtime: ServiceRuntime, deps: WebhookDeps, *, group: str, gather_ms: int
) -> None:
    async def on_event(envelope: Envelope[Any]) -> None:
        # Any event type is welcome (the subscriptions decide); a body that is not a kefu
        # envelope never gets here: the kernel dead-letters it with pydantic's reason.
        await fan_out(envelope, deps)

    # One consumer for all the topics, not one each: a single member joins the group, so a
    # start or a rebalance costs one join instead of five. In batches: every kefu event passes
    # here, so a fetch and a commit per event would cost more than the fan-out itself.
    runtime.batch_subscriber(
        *(runtime.topic(t) for t in WEBHOOK_SOURCE_TOPICS),
        model=Envelope[Any],
        handle=on_event,
        title="webhook-fan-out",
        description="Every kefu event, POSTed to the webhook subscriptions whose event types "
        "match it.",
        group_id=group,
        # Every kefu event passes here, most matching no subscription: the broker gathers them
        # for up to gather_ms instead of answering a fetch (and taking a commit) per event.
        gather_ms=gather_ms,
    )
