"""Other services' events as facts (the anti-corruption layer: their contracts in, our facts out).

Each fact id is the event's natural key, never the envelope id: the same occurrence republished
under another envelope (a replay, an outbox resend) still maps to the same fact.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kefu_shared.contracts.aftersales import AftersalesCaseClosed
from kefu_shared.contracts.inquiry import (
    InquiryAgentReplied,
    InquiryAutoAnswered,
    InquiryClassified,
    InquiryEvent,
    InquiryReceived,
    InquiryReopened,
    InquiryResolved,
    InquirySlaBreached,
    InquirySpamFiltered,
)
from kefu_shared.contracts.orders import (
    OrderAttributed,
    OrderAttributionRevoked,
    OrderEvent,
    OrderLossRecovered,
    OrderLost,
    OrderRefunded,
)

from kefu_feedback.domain.facts import MAX_TEXT_CHARS, Fact, FactKind


def _base(event: InquiryEvent, key: str, kind: FactKind, at: datetime) -> Fact:
    return Fact(
        id=f"{kind.value}:{event.inquiry_id}:{key}" if key else f"{kind.value}:{event.inquiry_id}",
        kind=kind,
        at=at,
        inquiry_id=event.inquiry_id,
        customer_id=event.customer_id,
        channel=event.channel.value,
        category=event.category.value if event.category else None,
    )


def facts_of_inquiry_event(event: InquiryEvent) -> list[Fact]:
    """The facts one inquiry event establishes (none for events no KPI uses)."""
    at = event.occurred_at
    if isinstance(event, InquiryReceived):
        message = replace(
            _base(event, event.message_id, FactKind.MESSAGE, event.sent_at),
            channel=event.message_channel.value,
            agent_id=event.agent_id,
        )
        if not event.opened:
            return [message]
        opened = replace(
            _base(event, "", FactKind.OPENED, at),
            started_at=at,
            language=event.language,
            text=event.content[:MAX_TEXT_CHARS],
        )
        return [opened, message]
    if isinstance(event, InquiryClassified):
        return [replace(_base(event, "", FactKind.CLASSIFIED, at), language=event.language)]
    if isinstance(event, InquiryAutoAnswered):
        return [replace(_base(event, "", FactKind.AUTO_ANSWERED, at), text=event.article_id)]
    if isinstance(event, InquiryAgentReplied):
        reply = _base(event, event.reply_id, FactKind.REPLY, at)
        return [
            replace(
                reply,
                agent_id=event.agent_id,
                seconds=event.response_seconds,
                first=event.first_response,
            )
        ]
    if isinstance(event, InquiryResolved):
        resolved = _base(event, at.isoformat(), FactKind.RESOLVED, at)
        return [
            replace(
                resolved,
                agent_id=event.agent_id,
                by_bot=event.by_bot,
                seconds=event.resolution_seconds,
                started_at=event.opened_at,
            )
        ]
    if isinstance(event, InquiryReopened):
        reopened = _base(event, at.isoformat(), FactKind.REOPENED, at)
        return [replace(reopened, agent_id=event.agent_id)]
    if isinstance(event, InquirySlaBreached):
        key = f"{event.sla.value}:{event.due_at.isoformat()}"
        breach = _base(event, key, FactKind.SLA_BREACHED, at)
        return [replace(breach, sla=event.sla.value, due_at=event.due_at, agent_id=event.agent_id)]
    if isinstance(event, InquirySpamFiltered):
        return [_base(event, event.message_id, FactKind.SPAM, at)]
    return []


def fact_of_case_closed(event: AftersalesCaseClosed) -> Fact:
    return Fact(
        id=f"{FactKind.AFTERSALES_CLOSED.value}:{event.case_id}",
        kind=FactKind.AFTERSALES_CLOSED,
        at=event.closed_at,
        customer_id=event.customer_id,
        channel=event.channel,
        category=event.kind.value,
        agent_id=event.actor_id,
        order_id=event.order_id,
        seconds=event.resolution_seconds,
        started_at=event.opened_at,
        language=event.language,
    )


def facts_of_order_event(event: OrderEvent) -> list[Fact]:
    """Deals, their cancellation and lost orders (conversion and the scorecard)."""
    order = event.order_id
    if isinstance(event, OrderAttributed):
        return [
            Fact(
                id=f"{FactKind.DEAL.value}:{order}:{event.revision}",
                kind=FactKind.DEAL,
                at=event.paid_at,
                customer_id=event.customer_id,
                channel=event.contact_channel.value if event.contact_channel else None,
                agent_id=event.agent_id,
                order_id=order,
                inquiry_id=event.inquiry_id,
                revision=event.revision,
            )
        ]
    if isinstance(event, OrderAttributionRevoked) or (
        isinstance(event, OrderRefunded) and event.full
    ):
        # "Refunded orders are not deals": a full refund, or the orders service's revocation.
        return [
            Fact(
                id=f"{FactKind.DEAL_CANCELLED.value}:{order}",
                kind=FactKind.DEAL_CANCELLED,
                at=event.occurred_at,
                customer_id=event.customer_id,
                agent_id=event.agent_id,
                order_id=order,
            )
        ]
    if isinstance(event, OrderLost):
        # Counted on the duty day the order was placed (the handbook's 值班当天).
        return [
            Fact(
                id=f"{FactKind.LOST_ORDER.value}:{order}",
                kind=FactKind.LOST_ORDER,
                at=event.placed_at,
                customer_id=event.customer_id,
                agent_id=event.agent_id,
                order_id=order,
            )
        ]
    if isinstance(event, OrderLossRecovered):
        return [
            Fact(
                id=f"{FactKind.LOSS_RECOVERED.value}:{order}",
                kind=FactKind.LOSS_RECOVERED,
                at=event.paid_at,
                customer_id=event.customer_id,
                agent_id=event.agent_id,
                order_id=order,
            )
        ]
    return []
