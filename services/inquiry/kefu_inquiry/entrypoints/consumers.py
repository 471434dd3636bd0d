"""One subscriber per served channel, each in its own consumer group (kefu-inquiry-<channel>),
so a platform team can run and scale the chat consumers alone."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.envelope import Envelope
from kefu_shared.runtime import ServiceRuntime
from kefu_shared.topics import Channel, inbound_channel_topic

from kefu_inquiry import handlers
from kefu_inquiry.handlers import Context, Deps


def _handler(
    channel: Channel, deps: Deps
) -> Callable[[Envelope[CustomerMessage]], Awaitable[None]]:
    async def on_customer_message(envelope: Envelope[CustomerMessage]) -> None:
        # Data that happens to parse as a message inside another event's envelope is not one.
        expected = (CustomerMessage.event_type, CustomerMessage.event_version)
        if (envelope.type, envelope.version) != expected:
            raise PoisonMessage(
                f"type: expected {expected[0]} v{expected[1]}, got {envelope.type} "
                f"v{envelope.version}"
            )
        message = envelope.data
        if message.channel is not channel:
            # A message on the wrong topic would be counted and timed under the wrong channel.
            deps.metrics.rejected.labels(channel.value, "channel_mismatch").inc()
            raise PoisonMessage(
                f"channel: message says {message.channel.value!r} on the {channel.value!r} topic"
            )
        await handlers.receive_message(
            message, deps, Context(correlation_id=envelope.correlation_id, causation_id=envelope.id)
        )

    on_customer_message.__name__ = f"on_{channel.value}_message"
    return on_customer_message


def register(
    runtime: ServiceRuntime,
    deps: Deps,
    channels: tuple[Channel, ...],
    group_for: Callable[[Channel], str],
) -> None:
    for channel in channels:
        # In batches: one fetch and one commit for many messages, each still handled alone
        # (its own retries and dead letter); one customer's messages in their order.
        runtime.batch_subscriber(
            runtime.topic(inbound_channel_topic(channel)),
            model=Envelope[CustomerMessage],
            handle=_handler(channel, deps),
            title=f"inquiry-inbound-{channel.value}",
            group_id=group_for(channel),
        )
