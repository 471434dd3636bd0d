"""Erasure (PIPL, the right to deletion): ask every service, and erase what inquiry holds.

An administrator's request is published through the outbox of a request document, so it goes
out exactly when it is recorded. Erasing is idempotent: each inquiry of the customer loses the
customer's name, contact and message texts (ids, channel, category, timestamps and SLA clocks
stay for the KPIs); then one ``CustomerDataErased`` goes out through the outbox of the erasure
record, applied once per consumed message so a redelivery publishes nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from kefu_shared import topics
from kefu_shared.contracts.inquiry import Contact
from kefu_shared.contracts.privacy import CustomerDataErased, CustomerErasureRequested
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope
from kefu_shared.outbox import OutboxMessage
from kefu_shared.retention import PURGED

from kefu_inquiry.domain.inquiry import Inquiry
from kefu_inquiry.handlers import SOURCE, Context, Deps

ERASED = "[erased]"
PRIVACY = "privacy_requests"


async def request_erasure(
    request: CustomerErasureRequested,
    store: VersionedDocumentStore,
    topic: Callable[[str], str],
    ctx: Context,
) -> bool:
    """Record the request and publish it; False if this request id was recorded before."""

    def decide(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        envelope = Envelope.wrap(
            request, source=SOURCE, correlation_id=ctx.correlation_id, event_id=request.request_id
        )
        state = {"kind": "request", **request.model_dump(mode="python")}
        return Change(
            state, [OutboxMessage.from_envelope(envelope, topic(topics.PRIVACY_REQUESTS))]
        )

    outcome = await store.mutate(f"request:{request.request_id}", decide)
    return outcome.changed


def _anonymised(inquiry: Inquiry) -> Inquiry | None:
    if (
        inquiry.customer_name == ERASED
        and inquiry.contact == Contact()
        and all(m.content == ERASED for m in inquiry.messages)
    ):
        return None
    messages = [m.model_copy(update={"content": ERASED}) for m in inquiry.messages]
    return inquiry.model_copy(
        update={"customer_name": ERASED, "contact": Contact(), "messages": messages}
    )


async def erase_customer(
    request: CustomerErasureRequested,
    deps: Deps,
    store: VersionedDocumentStore,
    now: datetime,
    ctx: Context,
) -> int:
    """Anonymise the customer's inquiries, then say so once; returns the documents changed."""
    erased = 0
    for found in await deps.queries.of_customer(request.customer_id, limit=10_000):

        def anonymise(current: Stored | None) -> Change | None:
            if current is None:
                return None
            changed = _anonymised(Inquiry.from_state(current.state))
            return None if changed is None else Change(changed.to_state())

        if (await deps.inquiries.mutate(found.id, anonymise)).changed:
            erased += 1

    def record(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        event = CustomerDataErased(
            request_id=request.request_id,
            customer_id=request.customer_id,
            service=SOURCE,
            documents=erased,
            erased_at=now,
        )
        envelope = Envelope.wrap(
            event,
            source=SOURCE,
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
            event_id=f"{SOURCE}:{request.request_id}",
        )
        out = OutboxMessage.from_envelope(envelope, deps.topic(topics.PRIVACY_EVENTS))
        state = {"kind": "erased", "customer_id": request.customer_id, "documents": erased}
        return Change(state, [out])

    await store.mutate(f"erased:{request.request_id}", record, message_id=ctx.causation_id or None)
    return erased


async def purge_transcripts(deps: Deps, period: timedelta) -> int:
    """Retention: message texts of inquiries resolved longer than ``period`` ago are purged.

    The kernel's RetentionJob sets whole fields; here the texts sit inside the messages list,
    so each inquiry is rewritten through its store (ids, times and categories stay for KPIs).
    """
    cutoff = deps.clock() - period
    old = deps.inquiries.collection.find(
        {"resolved_at": {"$lt": cutoff}}, {"_id": 1, "messages.content": 1}
    )
    due = [
        str(d["_id"])
        async for d in old
        if any(m.get("content") not in (PURGED, ERASED) for m in d.get("messages") or [])
    ]
    purged = 0

    def purge(current: Stored | None) -> Change | None:
        if current is None:
            return None
        inquiry = Inquiry.from_state(current.state)
        if inquiry.resolved_at is None or inquiry.resolved_at >= cutoff:
            return None  # reopened since the scan
        messages = [
            m if m.content in (PURGED, ERASED) else m.model_copy(update={"content": PURGED})
            for m in inquiry.messages
        ]
        return Change(inquiry.model_copy(update={"messages": messages}).to_state())

    for inquiry_id in due:
        if (await deps.inquiries.mutate(inquiry_id, purge)).changed:
            purged += 1
    return purged
