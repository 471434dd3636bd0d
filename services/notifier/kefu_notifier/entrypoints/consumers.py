"""Kafka: notification requests in, use case called, nothing else."""

from __future__ import annotations

from kefu_shared import topics
from kefu_shared.contracts.notifier import NotificationRequested
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.envelope import Envelope
from kefu_shared.runtime import ServiceRuntime

from kefu_notifier.handlers import NotifierDeps
from kefu_notifier.intake import accept_request


def register_consumers(runtime: ServiceRuntime, deps: NotifierDeps) -> None:
    async def on_notification_requested(envelope: Envelope[NotificationRequested]) -> None:
        # A body that does not parse or fails the contract never gets here: the kernel
        # dead-letters it with pydantic's reason. The envelope's own type is checked here.
        expected = (NotificationRequested.event_type, NotificationRequested.event_version)
        if (envelope.type, envelope.version) != expected:
            raise PoisonMessage(
                f"type: expected {expected[0]} v{expected[1]}, got {envelope.type} "
                f"v{envelope.version}"
            )
        await accept_request(
            envelope.data,
            message_id=envelope.id,
            correlation_id=envelope.correlation_id,
            deps=deps,
        )

    # In batches: one fetch and one commit for many requests, each still handled alone.
    runtime.batch_subscriber(
        runtime.topic(topics.NOTIFICATION_REQUESTS),
        model=Envelope[NotificationRequested],
        handle=on_notification_requested,
        title="notification-requests",
        description="NotificationRequested v1 from any kefu service; keyed by customer id.",
    )
