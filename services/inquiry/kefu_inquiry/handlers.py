"""Use cases: each loads what it needs, lets the domain decide, and stores the decision with
its events and notification requests in one document write (the outbox)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kefu_shared import topics
from kefu_shared.contracts.inquiry import (
    Category,
    CustomerMessage,
    Department,
    InquirySlaBreached,
    InquirySlaWarning,
)
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, new_id, utcnow
from kefu_shared.outbox import OutboxMessage
from kefu_shared.pii import redact_card_numbers
from kefu_shared.topics import Channel

from kefu_inquiry.adapters.metrics import InquiryMetrics
from kefu_inquiry.adapters.mongo import AgentDirectory, InquiryQueries, KnowledgeBase
from kefu_inquiry.adapters.notifications import notification_request
from kefu_inquiry.domain import inquiry as domain
from kefu_inquiry.domain.classification import Classifier
from kefu_inquiry.domain.inquiry import Decision, DomainError, IncomingMessage, Inquiry, Status
from kefu_inquiry.domain.knowledge import NEVER_BOT_ANSWERED, best_match, render_quick_reply
from kefu_inquiry.domain.routing import Agent, choose_agent
from kefu_inquiry.domain.sla import SlaPolicy

log = logging.getLogger(__name__)
SOURCE = "inquiry"


@dataclass
class Deps:
    inquiries: VersionedDocumentStore
    customers: VersionedDocumentStore
    queries: InquiryQueries
    agents: AgentDirectory
    knowledge: KnowledgeBase
    classifier: Classifier
    sla_policy: SlaPolicy
    metrics: InquiryMetrics
    topic: Callable[[str], str]
    channels: tuple[Channel, ...]
    bot_min_score: float = 0.6
    clock: Callable[[], datetime] = utcnow
    # Assignment reads every agent's load and then writes one inquiry: serialised in the process
    # so two concurrent dispatches cannot both give the last free slot away.
    dispatch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class Received:
    inquiry_id: str
    outcome: str  # opened | joined | spam | duplicate


@dataclass(frozen=True)
class Context:
    """Where a command came from, for the events' correlation and causation ids."""

    correlation_id: str | None = None
    causation_id: str | None = None


def _change(decision: Decision, deps: Deps, ctx: Context) -> Change:
    out: list[OutboxMessage] = []
    for event in decision.events:
        event_id = None
        if isinstance(event, InquirySlaWarning | InquirySlaBreached):
            # Deterministic: if two scanners ever fire the same alarm, consumers see one id.
            kind = "breach" if isinstance(event, InquirySlaBreached) else "warning"
            event_id = f"{event.inquiry_id}:{event.sla.value}:{kind}:{event.due_at.isoformat()}"
        envelope = Envelope.wrap(
            event,
            source=SOURCE,
            correlation_id=ctx.correlation_id,
            causation_id=ctx.causation_id,
            time=event.occurred_at,
            event_id=event_id,
        )
        out.append(OutboxMessage.from_envelope(envelope, deps.topic(topics.INQUIRY_EVENTS)))
    for notice in decision.notices:
        request = notification_request(decision.inquiry, notice)
        envelope = Envelope.wrap(
            request, source=SOURCE, correlation_id=ctx.correlation_id, causation_id=ctx.causation_id
        )
        out.append(OutboxMessage.from_envelope(envelope, deps.topic(topics.NOTIFICATION_REQUESTS)))
    return Change(decision.inquiry.to_state(), out)


def _inquiry(stored: Stored | None) -> Inquiry | None:
    return Inquiry.from_state(stored.state) if stored else None


# -- intake -------------------------------------------------------------------------------------


async def receive_message(message: CustomerMessage, deps: Deps, ctx: Context) -> Received:
    """Record a customer message: spam is refused once and closed; anything else joins the
    customer's open inquiry (whatever the channel) or opens one, classified and perhaps answered."""
    now = deps.clock()
    channel = message.channel.value
    incoming = IncomingMessage(
        message_id=message.message_id,
        channel=message.channel,
        customer_id=message.customer_id,
        customer_name=message.customer_name,
        contact=message.contact,
        # Card numbers go before anything is classified, stored or published.
        content=redact_card_numbers(message.content),
        order_reference=message.order_reference,
        language=message.language,
        sent_at=message.sent_at,
    )
    classification = deps.classifier.classify(incoming.content, message.language)
    if classification.category is Category.SPAM:
        return await _receive_spam(incoming, classification, deps, ctx, now)

    articles = []
    if not classification.needs_human and classification.category not in NEVER_BOT_ANSWERED:
        articles = await deps.knowledge.articles(classification.language)
    answer = best_match(
        articles, incoming.content, classification.language, classification.category
    )

    def new_inquiry(inquiry_id: str) -> Decision:
        return domain.open_inquiry(
            inquiry_id,
            incoming,
            classification,
            answer,
            deps.sla_policy,
            now,
            bot_min_score=deps.bot_min_score,
        )

    candidate = domain.inquiry_id_for(message.message_id)
    fresh = new_inquiry(candidate)
    # A new inquiry the bot resolves at once is never open, so nothing needs to point to it.
    resolved_at_once = fresh.inquiry.status is Status.RESOLVED
    for _ in range(3):
        inquiry_id = await _open_inquiry_of(incoming, deps, point=not resolved_at_once)
        stale = False
        opened = False

        def decide(current: Stored | None, inquiry_id: str = inquiry_id) -> Change | None:
            nonlocal stale, opened
            existing = _inquiry(current)
            opened = existing is None
            if existing is None:
                decision = fresh if inquiry_id == candidate else new_inquiry(inquiry_id)
            elif not existing.is_open:
                stale = True  # the pointer survived a crash after the inquiry closed
                return None
            else:
                decision = domain.add_customer_message(existing, incoming, deps.sla_policy, now)
            return _change(decision, deps, ctx)

        # The pointer names the id a first message gives a new inquiry: most likely new.
        outcome = await deps.inquiries.mutate(
            inquiry_id,
            decide,
            message_id=message.message_id,
            expect_new=inquiry_id == domain.inquiry_id_for(message.message_id),
        )
        if stale:
            await _forget_open_inquiry(message.customer_id, inquiry_id, deps)
            continue
        if outcome.duplicate:
            deps.metrics.messages.labels(channel, "duplicate").inc()
            return Received(inquiry_id, "duplicate")
        result = _inquiry(outcome.stored)
        assert result is not None
        deps.metrics.messages.labels(channel, "opened" if opened else "joined").inc()
        if opened:
            deps.metrics.classified.labels(
                result.channel.value, str(result.category), str(result.needs_human).lower()
            ).inc()
        if result.status is Status.RESOLVED:  # answered by the bot
            deps.metrics.auto_answered.labels(channel).inc()
            if not (opened and resolved_at_once):  # else nothing pointed to it
                await _forget_open_inquiry(message.customer_id, inquiry_id, deps)
        elif result.status is Status.QUEUED:
            await dispatch(inquiry_id, deps, ctx)
        return Received(inquiry_id, "opened" if opened else "joined")
    raise RuntimeError(f"customer {message.customer_id}: open inquiry keeps closing under us")


async def _receive_spam(
    incoming: IncomingMessage, classification: Any, deps: Deps, ctx: Context, now: datetime
) -> Received:
    # One polite refusal per customer: the customer document remembers which message got it,
    # so a redelivery of that message still carries the refusal and any later spam does not.
    def mark(current: Stored | None) -> Change | None:
        state = dict(current.state) if current else {}
        if state.get("spam_refused_by"):
            return None
        return Change({**state, "spam_refused_by": incoming.message_id, "spam_refused_at": now})

    marked = await deps.customers.mutate(incoming.customer_id, mark)
    refused_by = marked.stored.state.get("spam_refused_by") if marked.stored else None
    inquiry_id = domain.inquiry_id_for(incoming.message_id)
    refusal = (
        domain.spam_refusal(inquiry_id, incoming.customer_id, classification.language)
        if refused_by == incoming.message_id
        else None
    )

    def decide(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        return _change(domain.open_spam(incoming, classification, refusal, now), deps, ctx)

    outcome = await deps.inquiries.mutate(
        inquiry_id, decide, message_id=incoming.message_id, expect_new=True
    )
    deps.metrics.messages.labels(
        incoming.channel.value, "duplicate" if outcome.duplicate else "spam"
    ).inc()
    return Received(inquiry_id, "duplicate" if outcome.duplicate else "spam")


async def _open_inquiry_of(incoming: IncomingMessage, deps: Deps, *, point: bool = True) -> str:
    """The customer's open inquiry, or the id a new one gets (deterministic from the message).

    ``point``: record the new id as the customer's open inquiry, so the customer's next
    messages (on any channel, in any instance) join it. Without (a new inquiry the bot resolves
    at once, which would be unpointed right after) the customer is only read: two writes
    fewer per bot-answered message, and the outcome of a message racing this one on another
    channel is one that serial order gives too.
    """
    candidate = domain.inquiry_id_for(incoming.message_id)
    if not point:
        customer = await deps.customers.load(incoming.customer_id)
        open_id = customer.state.get("open_inquiry_id") if customer else None
        return str(open_id) if open_id else candidate

    def point_to_candidate(current: Stored | None) -> Change | None:
        state = dict(current.state) if current else {}
        if state.get("open_inquiry_id"):
            return None
        recent = [*state.get("inquiry_ids", []), candidate][-50:]
        return Change({**state, "open_inquiry_id": candidate, "inquiry_ids": recent})

    outcome = await deps.customers.mutate(incoming.customer_id, point_to_candidate)
    assert outcome.stored is not None
    return str(outcome.stored.state["open_inquiry_id"])


async def _forget_open_inquiry(customer_id: str, inquiry_id: str, deps: Deps) -> None:
    def clear(current: Stored | None) -> Change | None:
        if current is None or current.state.get("open_inquiry_id") != inquiry_id:
            return None
        return Change({**current.state, "open_inquiry_id": None})

    await deps.customers.mutate(customer_id, clear)


async def _point_to(customer_id: str, inquiry_id: str, deps: Deps) -> None:
    def point(current: Stored | None) -> Change | None:
        state = dict(current.state) if current else {}
        if state.get("open_inquiry_id"):
            return None  # the customer already has another open inquiry: leave it
        return Change({**state, "open_inquiry_id": inquiry_id})

    await deps.customers.mutate(customer_id, point)


# -- routing ------------------------------------------------------------------------------------


async def dispatch(inquiry_id: str, deps: Deps, ctx: Context | None = None) -> str | None:
    """Offer one waiting inquiry to the least-loaded agent who can take it."""
    async with deps.dispatch_lock:
        agents = await deps.agents.on_duty()
        loads = await deps.queries.loads()
        return await _assign(inquiry_id, agents, loads, deps, ctx or Context())


async def dispatch_queue(deps: Deps, ctx: Context | None = None) -> int:
    """Drain the queue (oldest first) while agents are free: when one frees up or comes on duty,
    and periodically (which also finishes an assignment a crash interrupted)."""
    assigned = 0
    async with deps.dispatch_lock:
        agents = await deps.agents.on_duty()
        if not agents:
            return 0
        loads = await deps.queries.loads()
        for inquiry_id in await deps.queries.waiting(deps.channels):
            agent_id = await _assign(inquiry_id, agents, loads, deps, ctx or Context())
            if agent_id:
                loads[agent_id] += 1
                assigned += 1
    return assigned


async def _assign(
    inquiry_id: str, agents: list[Agent], loads: Any, deps: Deps, ctx: Context
) -> str | None:
    now = deps.clock()
    chosen: dict[str, Agent] = {}

    def decide(current: Stored | None) -> Change | None:
        inquiry = _inquiry(current)
        if inquiry is None or inquiry.status is not Status.QUEUED:
            return None
        agent = choose_agent(agents, loads, inquiry.routing_need())
        if agent is None:
            return None
        chosen["agent"] = agent
        return _change(domain.assign(inquiry, agent, now), deps, ctx)

    outcome = await deps.inquiries.mutate(inquiry_id, decide)
    if outcome.changed and "agent" in chosen:
        result = _inquiry(outcome.stored)
        deps.metrics.assigned.labels(result.channel.value if result else "unknown").inc()
        return chosen["agent"].id
    return None


async def put_agent(agent: Agent, deps: Deps) -> None:
    await deps.agents.put(agent)
    if agent.on_duty:
        await dispatch_queue(deps)


# -- agent actions ------------------------------------------------------------------------------


async def _act(
    inquiry_id: str, act: Callable[[Inquiry], Decision], deps: Deps, ctx: Context, key: str | None
) -> Inquiry:
    def decide(current: Stored | None) -> Change | None:
        inquiry = _inquiry(current)
        if inquiry is None:
            raise DomainError(f"no inquiry {inquiry_id}", not_found=True)
        return _change(act(inquiry), deps, ctx)

    outcome = await deps.inquiries.mutate(inquiry_id, decide, message_id=key)
    result = _inquiry(outcome.stored)
    assert result is not None
    return result


async def _agent(agent_id: str, deps: Deps) -> Agent:
    agent = await deps.agents.get(agent_id)
    if agent is None:
        raise DomainError(f"no agent {agent_id}", not_found=True)
    return agent


async def reply(
    inquiry_id: str,
    agent_id: str,
    text: str | None,
    quick_reply_id: str | None,
    reply_id: str | None,
    deps: Deps,
    ctx: Context,
) -> Inquiry:
    agent = await _agent(agent_id, deps)
    current = await deps.queries.get(inquiry_id)
    if current is None:
        raise DomainError(f"no inquiry {inquiry_id}", not_found=True)
    if quick_reply_id:
        quick = await deps.knowledge.quick_reply(quick_reply_id)
        if quick is None:
            raise DomainError(f"no quick reply {quick_reply_id}", not_found=True)
        text = render_quick_reply(quick, current.customer_name, current.order_reference)
    if not text:
        raise DomainError("a reply needs text or a quick_reply_id")
    # Card numbers typed by an agent are as forbidden as a customer's.
    text = redact_card_numbers(text)
    rid = reply_id or f"{inquiry_id}:reply:{new_id()}"
    now = deps.clock()
    result = await _act(
        inquiry_id,
        lambda i: domain.reply(i, agent_id, text, rid, now, quick_reply_id, agent.name or agent.id),
        deps,
        ctx,
        rid,
    )
    if current.first_response_at is None and result.first_response_at is not None:
        waited = (result.first_response_at - result.opened_at).total_seconds()
        deps.metrics.first_response.labels(result.channel.value).observe(max(waited, 0.0))
    return result


async def transfer(
    inquiry_id: str, agent_id: str, to_agent_id: str, reason: str, deps: Deps, ctx: Context
) -> Inquiry:
    target = await _agent(to_agent_id, deps)
    if not target.on_duty:
        raise DomainError(f"agent {to_agent_id} is not on duty")
    now = deps.clock()
    return await _act(
        inquiry_id, lambda i: domain.transfer(i, agent_id, target, reason, now), deps, ctx, None
    )


async def escalate(
    inquiry_id: str,
    agent_id: str,
    department: Department | None,
    reason: str,
    deps: Deps,
    ctx: Context,
) -> Inquiry:
    now = deps.clock()
    result = await _act(
        inquiry_id, lambda i: domain.escalate(i, agent_id, department, reason, now), deps, ctx, None
    )
    if result.status is Status.QUEUED:
        await dispatch(inquiry_id, deps, ctx)
        result = await deps.queries.get(inquiry_id) or result
    else:
        await dispatch_queue(deps, ctx)  # the escalating agent has a free slot now
    return result


async def resolve(inquiry_id: str, agent_id: str | None, deps: Deps, ctx: Context) -> Inquiry:
    now = deps.clock()
    result = await _act(inquiry_id, lambda i: domain.resolve(i, agent_id, now), deps, ctx, None)
    await _forget_open_inquiry(result.customer_id, inquiry_id, deps)
    await dispatch_queue(deps, ctx)
    return result


async def reopen(
    inquiry_id: str, agent_id: str | None, reason: str, deps: Deps, ctx: Context
) -> Inquiry:
    agent = await _agent(agent_id, deps) if agent_id else None
    now = deps.clock()
    result = await _act(
        inquiry_id,
        lambda i: domain.reopen(i, agent, reason, deps.sla_policy, now),
        deps,
        ctx,
        None,
    )
    await _point_to(result.customer_id, inquiry_id, deps)
    if result.status is Status.QUEUED:
        await dispatch(inquiry_id, deps, ctx)
    return result


# -- SLA timers ---------------------------------------------------------------------------------


async def fire_due_slas(deps: Deps) -> int:
    """Warnings and breaches whose moment has come; run by the background loop. The flags in
    the document make each fire once, also after a restart (late rather than never)."""
    now = deps.clock()
    fired = 0
    for inquiry_id in await deps.queries.due(now, deps.channels):

        def decide(current: Stored | None) -> Change | None:
            inquiry = _inquiry(current)
            if inquiry is None:
                return None
            decision = domain.fire_sla(inquiry, now)
            if not decision.events and decision.inquiry.sla_next_at == inquiry.sla_next_at:
                return None
            return _change(decision, deps, Context())

        outcome = await deps.inquiries.mutate(inquiry_id, decide)
        if not outcome.changed and deps.inquiries.due is not None:
            # Nothing was due after all (a stale due time): set it from the inquiry.
            await deps.inquiries.due.refresh(inquiry_id, outcome.stored)
        for message in outcome.events:
            if message.headers.get("ce_type", "").startswith("kefu.inquiry.sla_"):
                fired += 1
                kind = "breach" if "breached" in message.headers["ce_type"] else "warning"
                sla_kind = Envelope[Any].model_validate_json(message.body).data.get("sla", "")
                channel = _inquiry(outcome.stored)
                deps.metrics.sla_alarms.labels(
                    channel.channel.value if channel else "unknown", sla_kind, kind
                ).inc()
    return fired


async def run_every(seconds: float, job: Callable[[], Any], name: str) -> None:
    """A background loop that survives its job's failures (a store blip must not stop timers)."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.1fs", name, seconds)
        await asyncio.sleep(seconds)


async def run_until_done(job: Callable[[], Any], name: str, pause: float = 2.0) -> None:
    """A start-up job retried until it succeeds (the store may still be coming up)."""
    while True:
        try:
            await job()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.1fs", name, pause)
        await asyncio.sleep(pause)
