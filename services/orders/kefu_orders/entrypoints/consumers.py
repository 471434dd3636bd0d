"""Kafka: the commerce platform's order lifecycle and the inquiry events in, use cases called."""

from __future__ import annotations

from typing import Any

from kefu_shared import topics
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.envelope import Envelope
from kefu_shared.runtime import ServiceRuntime

from kefu_orders import handlers
from kefu_orders.handlers import Context, Deps


def register(runtime: ServiceRuntime, deps: Deps, *, gather_ms: int) -> None:
    async def on_commerce_order(envelope: Envelope[CommerceOrderEvent]) -> None:
        # A body that does not parse or breaks the contract never gets here: the kernel
        # dead-letters it with pydantic's reason. The envelope's own type is checked here.
        expected = (CommerceOrderEvent.event_type, CommerceOrderEvent.event_version)
        if (envelope.type, envelope.version) != expected:
            raise PoisonMessage(
                f"type: expected {expected[0]} v{expected[1]}, got {envelope.type} "
                f"v{envelope.version}"
            )
        if envelope.subject != envelope.data.order_id:
            raise PoisonMessage(
                f"subject: {envelope.subject!r} is not the order id {envelope.data.order_id!r}"
            )
        await handlers.receive_commerce_event(
            envelope.data,
            message_id=envelope.id,
            deps=deps,
            ctx=Context(correlation_id=envelope.correlation_id, causation_id=envelope.id),
        )

    async def on_inquiry_event(envelope: Envelope[dict[str, Any]]) -> None:
        await handlers.record_inquiry_event(envelope, deps)

    # In batches, read at once: a festival's burst costs a fetch and a commit per batch, and
    # CONSUMER_WORKERS keys are handled at once, one key's steps in their order (an order's
    # steps share its key), each step still retried and dead-lettered alone.
    runtime.batch_subscriber(
        runtime.topic(topics.COMMERCE_ORDERS),
        model=Envelope[CommerceOrderEvent],
        handle=on_commerce_order,
        title="orders-commerce-orders",
    )
    # A group of its own: the inquiry topic is consumed at its own pace, and a rebalance of
    # one subscription never pauses the other.
    base = runtime.settings.consumer_group or f"kefu-{runtime.name}"
    # Every inquiry event passes here and few are evidence (an agent's reply), so they come in
    # batches the broker may gather for up to ``gather_ms``: a fetch and a commit per batch,
    # each event still handled alone. The attribution does not depend on their order: every
    # contact carries its time.
    runtime.batch_subscriber(
        runtime.topic(topics.INQUIRY_EVENTS),
        model=Envelope[dict[str, Any]],
        handle=on_inquiry_event,
        title="orders-inquiry-events",
        group_id=f"{base}-inquiry-events",
        gather_ms=gather_ms,
    )
