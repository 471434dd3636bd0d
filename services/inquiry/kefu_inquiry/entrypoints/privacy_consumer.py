"""Erasure requests, in their own consumer group so privacy work never waits behind intake."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from kefu_shared import topics
from kefu_shared.contracts.privacy import CustomerErasureRequested
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.documents import VersionedDocumentStore
from kefu_shared.envelope import Envelope
from kefu_shared.runtime import ServiceRuntime

from kefu_inquiry import privacy
from kefu_inquiry.handlers import Context, Deps


def register(
    runtime: ServiceRuntime,
    deps: Deps,
    store: VersionedDocumentStore,
    clock: Callable[[], datetime],
) -> None:
    async def on_erasure_requested(envelope: Envelope[CustomerErasureRequested]) -> None:
        expected = (CustomerErasureRequested.event_type, CustomerErasureRequested.event_version)
        if (envelope.type, envelope.version) != expected:
            raise PoisonMessage(f"type: expected {expected[0]} v{expected[1]}, got {envelope.type}")
        ctx = Context(correlation_id=envelope.correlation_id, causation_id=envelope.id)
        await privacy.erase_customer(envelope.data, deps, store, clock(), ctx)

    group = f"{runtime.settings.consumer_group}-privacy"
    runtime.subscribe(topics.PRIVACY_REQUESTS, on_erasure_requested, group=group)
