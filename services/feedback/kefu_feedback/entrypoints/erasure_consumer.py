"""Erasure requests, in a consumer group of their own (privacy work never waits behind the
service's main traffic, and each service confirms on its own)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from kefu_shared import topics
from kefu_shared.contracts.privacy import CustomerErasureRequested
from kefu_shared.dead_letter import PoisonMessage
from kefu_shared.envelope import Envelope
from kefu_shared.runtime import ServiceRuntime

from kefu_feedback.adapters import erasure


def register_erasure(runtime: ServiceRuntime, clock: Callable[[], datetime]) -> None:
    store = runtime.document_store(erasure.ERASURES)
    rules = erasure.load_rules()

    async def on_erasure_requested(envelope: Envelope[CustomerErasureRequested]) -> None:
        expected = (CustomerErasureRequested.event_type, CustomerErasureRequested.event_version)
        if (envelope.type, envelope.version) != expected:
            raise PoisonMessage(f"type: expected {expected[0]} v{expected[1]}, got {envelope.type}")
        await erasure.erase_customer(
            envelope.data, envelope, runtime.db, rules, store, runtime.topic, clock()
        )

    group = f"{runtime.settings.consumer_group}-privacy"
    runtime.subscribe(topics.PRIVACY_REQUESTS, on_erasure_requested, group=group)
