"""Use cases: each loads what it needs, lets the domain decide, and stores the decision with its
events and notification requests in one document write (the outbox)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from kefu_shared import topics
from kefu_shared.audit import AuditLog
from kefu_shared.contracts.aftersales import (
    AftersalesCaseClosed,
    AftersalesCaseOpened,
    AftersalesDecisionMade,
    AftersalesRefundIssued,
    AftersalesStateChanged,
    CaseContact,
    CaseKind,
    CaseState,
    MarketplaceReview,
    NegativeReviewAnswered,
    NegativeReviewReplyOverdue,
    RequestReason,
    Verdict,
)
from kefu_shared.contracts.inquiry import Category, InquiryClassified, InquiryReceived
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, new_id, utcnow
from kefu_shared.outbox import OutboxMessage
from kefu_shared.pii import redact_card_numbers

from kefu_aftersales.adapters.metrics import AftersalesMetrics
from kefu_aftersales.adapters.mongo import CaseQueries, order_from_state, order_to_state
from kefu_aftersales.adapters.notifications import notification_request
from kefu_aftersales.domain import case as domain
from kefu_aftersales.domain.case import (
    Case,
    Customer,
    Decision,
    DomainError,
    RequestDetails,
    StepDetails,
    case_id_for,
    notice_language,
)
from kefu_aftersales.domain.flows import Flows
from kefu_aftersales.domain.inference import RequestInferrer
from kefu_aftersales.domain.orders import (
    FieldProblem,
    OrderLine,
    OrderSnapshot,
    RequestedLine,
    check_against_order,
)
from kefu_aftersales.domain.policy import Policy

log = logging.getLogger(__name__)
SOURCE = "aftersales"


@dataclass
class Deps:
    cases: VersionedDocumentStore
    orders: VersionedDocumentStore
    claims: VersionedDocumentStore
    inquiries: VersionedDocumentStore
    queries: CaseQueries
    audit: AuditLog
    policy: Policy
    flows: Flows
    inferrer: RequestInferrer
    metrics: AftersalesMetrics
    topic: Callable[[str], str]
    clock: Callable[[], datetime] = utcnow
    stale_claim: timedelta = field(default_factory=lambda: timedelta(seconds=60))


@dataclass(frozen=True)
class Context:
    """Where a command came from: correlation and causation ids, and who asked (HTTP)."""

    correlation_id: str | None = None
    causation_id: str | None = None
    actor_id: str | None = None
    role: str | None = None


class InvalidRequest(Exception):
    """The request does not fit the order: every problem, each naming its field (HTTP 422)."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


# -- events, notices, metrics -------------------------------------------------------------------


CORRELATION_FIELD = "correlation_id"
"""Kept in the case document: events a timer fires later still join the customer's journey."""


def _change(
    decision: Decision, deps: Deps, ctx: Context, version: int, correlation_id: str | None
) -> Change:
    case = decision.case
    correlation = correlation_id or ctx.correlation_id or new_id()
    out: list[OutboxMessage] = []
    for i, event in enumerate(decision.events):
        # Deterministic per document version: should two writers ever produce the same step,
        # consumers see one id.
        envelope = Envelope.wrap(
            event,
            source=SOURCE,
            correlation_id=correlation,
            causation_id=ctx.causation_id,
            time=event.occurred_at,
            event_id=f"{case.id}:{version}:{i}",
        )
        out.append(OutboxMessage.from_envelope(envelope, deps.topic(topics.AFTERSALES_EVENTS)))
    for notice in decision.notices:
        envelope = Envelope.wrap(
            notification_request(case, notice),
            source=SOURCE,
            correlation_id=correlation,
            causation_id=ctx.causation_id,
            event_id=notice.idempotency_key,
        )
        out.append(OutboxMessage.from_envelope(envelope, deps.topic(topics.NOTIFICATION_REQUESTS)))
    return Change({**case.to_state(), CORRELATION_FIELD: correlation}, out)


def _count(decision: Decision, deps: Deps) -> None:
    m = deps.metrics
    kind = decision.case.kind.value
    for event in decision.events:
        if isinstance(event, AftersalesCaseOpened):
            m.opened.labels(kind, event.origin.value).inc()
        elif isinstance(event, AftersalesDecisionMade):
            m.decisions.labels(kind, event.verdict.value, event.rule, event.decided_by).inc()
        elif isinstance(event, AftersalesStateChanged):
            m.transitions.labels(kind, event.state.value, str(event.override).lower()).inc()
        elif isinstance(event, AftersalesRefundIssued):
            m.refunds.labels(event.currency).inc(event.amount_cents)
        elif isinstance(event, AftersalesCaseClosed):
            m.resolution_seconds.labels(kind, event.resolution).observe(event.resolution_seconds)
        elif isinstance(event, NegativeReviewAnswered):
            m.review_replies.labels(str(event.within_deadline).lower()).inc()
        elif isinstance(event, NegativeReviewReplyOverdue):
            m.replies_overdue.labels(event.marketplace).inc()


async def _create(
    case_id: str, build: Callable[[], Decision], deps: Deps, ctx: Context
) -> tuple[Case, bool]:
    """Store a new case unless it exists (a retried or redelivered intake): (case, created)."""
    made: list[Decision] = []

    def decide(current: Stored | None) -> Change | None:
        made.clear()
        if current is not None:
            return None
        decision = build()
        made.append(decision)
        return _change(decision, deps, ctx, 1, ctx.correlation_id)

    outcome = await deps.cases.mutate(case_id, decide, message_id=ctx.causation_id)
    if outcome.changed and made:
        _count(made[0], deps)
        return made[0].case, True
    assert outcome.stored is not None
    return Case.from_state(outcome.stored.state), False


async def _act(
    case_id: str,
    act: Callable[[Case], Decision],
    deps: Deps,
    ctx: Context,
    *,
    message_id: str | None = None,
) -> tuple[Case, Case | None, int]:
    """Apply a command to an existing case: (after, before, version written); before is None
    when the command had been applied already (same ``message_id``)."""
    made: list[tuple[Case, Decision, int]] = []

    def decide(current: Stored | None) -> Change | None:
        made.clear()
        if current is None:
            raise DomainError(f"no case {case_id}", not_found=True)
        before = Case.from_state(current.state)
        decision = act(before)
        if not decision.events and not decision.notices and decision.case == before:
            return None  # nothing to do (e.g. a timer that is no longer due)
        made.append((before, decision, current.version + 1))
        return _change(
            decision, deps, ctx, current.version + 1, current.state.get(CORRELATION_FIELD)
        )

    outcome = await deps.cases.mutate(case_id, decide, message_id=message_id)
    assert outcome.stored is not None
    after = Case.from_state(outcome.stored.state)
    if not outcome.changed or not made:
        return after, None, outcome.stored.version
    before, decision, version = made[0]
    _count(decision, deps)
    if after.state is CaseState.CLOSED and after.order_id:
        await _release_lines(after.order_id, after.id, deps)
    return after, before, version


# -- the order projection -----------------------------------------------------------------------


async def project_order(event: CommerceOrderEvent, *, message_id: str, deps: Deps) -> None:
    """Keep the latest complete order (every commerce event carries all of it)."""

    def decide(current: Stored | None) -> Change | None:
        if (
            current is not None
            and current.state.get("event_at")
            and event.moment() < (current.state["event_at"])
        ):
            return None  # an older step arriving late: the stored order is newer
        return Change(order_to_state(event))

    await deps.orders.mutate(event.order_id, decide, message_id=message_id)


async def find_order(order_id: str, deps: Deps) -> OrderSnapshot | None:
    stored = await deps.orders.load(order_id)
    return order_from_state(order_id, stored.state) if stored else None


def _contact(order: OrderSnapshot | None) -> CaseContact:
    return CaseContact(**dict(order.contact)) if order else CaseContact()


# -- line claims: one open case per order line ----------------------------------------------------


async def _claim_lines(order_id: str, skus: Sequence[str], case_id: str, deps: Deps) -> None:
    """Record that ``case_id`` holds these lines; 409 if another open case holds one.

    The claims of an order live in one document, written with compare-and-set and serialised in
    the process, so two requests for the same line cannot both win. A claim whose case was never
    written (a crash between claim and case) expires after ``stale_claim``.
    """
    now = deps.clock()
    conflicts: dict[str, str] = {}

    async def decide(current: Stored | None) -> Change | None:
        conflicts.clear()
        state = dict(current.state) if current else {}
        claims = [c for c in state.get("claims", []) if c["sku"] not in skus]
        for claim in state.get("claims", []):
            held_by_other = claim["sku"] in skus and claim["case_id"] != case_id
            if held_by_other and await _holds(claim, now, deps):
                conflicts[claim["sku"]] = claim["case_id"]
        if conflicts:
            return None
        claims.extend({"sku": sku, "case_id": case_id, "at": now} for sku in skus)
        return Change({**state, "claims": claims})

    await deps.claims.mutate(order_id, decide)
    if conflicts:
        sku, holder = next(iter(conflicts.items()))
        raise DomainError(
            f"lines: {sku!r} of order {order_id!r} already has an open case {holder}",
            reason="duplicate_case",
        )


async def _holds(claim: dict[str, Any], now: datetime, deps: Deps) -> bool:
    stored = await deps.cases.load(claim["case_id"])
    if stored is None:
        return bool(now - claim["at"] < deps.stale_claim)  # still being written, or abandoned
    return bool(stored.state.get("state") != CaseState.CLOSED.value)


async def _release_lines(order_id: str, case_id: str, deps: Deps) -> None:
    def decide(current: Stored | None) -> Change | None:
        if current is None:
            return None
        claims = current.state.get("claims", [])
        kept = [c for c in claims if c["case_id"] != case_id]
        if len(kept) == len(claims):
            return None
        return Change({**current.state, "claims": kept})

    await deps.claims.mutate(order_id, decide)


# -- intake over HTTP -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestCommand:
    """A complete request (``POST /cases``) or an agent's completion of an inquiry's case."""

    customer_id: str
    order_id: str
    kind: CaseKind
    reason: RequestReason
    lines: Sequence[RequestedLine]
    description: str = ""
    evidence: Sequence[str] = ()
    item_opened: bool = False
    channel: str | None = None
    language: str | None = None
    contact: CaseContact | None = None
    request_id: str | None = None


async def _checked(cmd: RequestCommand, deps: Deps) -> tuple[OrderSnapshot, list[OrderLine]]:
    order = await find_order(cmd.order_id, deps)
    refunded = await deps.queries.refunded_quantities(cmd.order_id) if order else {}
    check = check_against_order(order, cmd.order_id, cmd.customer_id, cmd.lines, refunded)
    if check.problems:
        for problem in check.problems:
            deps.metrics.refused.labels(problem.reason).inc()
        raise InvalidRequest(check.problems)
    assert order is not None
    return order, check.lines


def _details(cmd: RequestCommand, lines: list[OrderLine]) -> RequestDetails:
    return RequestDetails(
        kind=cmd.kind,
        reason=cmd.reason,
        lines=lines,
        description=redact_card_numbers(cmd.description),
        evidence=list(cmd.evidence),
        item_opened=cmd.item_opened,
    )


async def open_case(cmd: RequestCommand, deps: Deps, ctx: Context) -> tuple[Case, bool]:
    """Check the request against the order, hold its lines, open the case and review it."""
    case_id = case_id_for(f"request:{cmd.request_id or new_id()}")
    existing = await deps.cases.load(case_id)
    if existing is not None:  # the same request again: same case, nothing new
        return Case.from_state(existing.state), False
    order, lines = await _checked(cmd, deps)
    await _claim_lines(cmd.order_id, [ln.sku for ln in lines], case_id, deps)
    customer = Customer(
        customer_id=cmd.customer_id,
        channel=cmd.channel or order.channel,
        language=notice_language(cmd.language or order.language),
        contact=cmd.contact or _contact(order),
    )
    details = _details(cmd, lines)
    delivered_at = order.delivered_at
    assert delivered_at is not None
    now = deps.clock()
    try:
        return await _create(
            case_id,
            lambda: domain.open_request(
                case_id,
                customer,
                cmd.order_id,
                details,
                delivered_at=delivered_at,
                currency=order.currency,
                policy=deps.policy,
                now=now,
            ),
            deps,
            ctx,
        )
    except Exception:
        await _release_lines(cmd.order_id, case_id, deps)
        raise


async def complete_case(case_id: str, cmd: RequestCommand, deps: Deps, ctx: Context) -> Case:
    """An agent completes a case an inquiry opened; then the policy reviews it."""
    current = await deps.cases.load(case_id)
    if current is None:
        raise DomainError(f"no case {case_id}", not_found=True)
    case = Case.from_state(current.state)
    if not case.needs_completion or case.state is not CaseState.REQUESTED:
        raise DomainError(f"case {case_id} is {case.state.value}: nothing to complete")
    if case.customer_id != cmd.customer_id:
        raise DomainError("customer_id: the case belongs to another customer", field="customer_id")
    order, lines = await _checked(cmd, deps)
    await _claim_lines(cmd.order_id, [ln.sku for ln in lines], case_id, deps)
    details = _details(cmd, lines)
    now = deps.clock()
    delivered_at = order.delivered_at
    assert delivered_at is not None
    contact = cmd.contact or (_contact(order) if order.contact else None)
    try:
        after, _, _ = await _act(
            case_id,
            lambda c: domain.complete(
                c,
                cmd.order_id,
                details,
                actor_id=ctx.actor_id or "agent",
                delivered_at=delivered_at,
                currency=order.currency,
                contact=contact,
                policy=deps.policy,
                now=now,
            ),
            deps,
            ctx,
            message_id=cmd.request_id,
        )
    except DomainError:
        await _release_lines(cmd.order_id, case_id, deps)
        raise
    return after


# -- intake from inquiries ----------------------------------------------------------------------


async def remember_inquiry(event: InquiryReceived, deps: Deps) -> None:
    """Keep an opened inquiry's first message until its classification arrives (right after
    it, on the same partition): the classification alone does not carry the text."""
    if not event.opened:
        return

    def decide(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        return Change(
            {
                "customer_id": event.customer_id,
                "content": event.content,
                "order_reference": event.order_reference,
                "language": event.language,
                "channel": event.channel.value,
                "received_at": event.occurred_at,
            }
        )

    await deps.inquiries.mutate(event.inquiry_id, decide)


async def on_inquiry_classified(
    event: InquiryClassified, deps: Deps, ctx: Context
) -> tuple[Case, bool] | None:
    """An after-sales inquiry opens a ``requested`` case; any other category only frees the
    remembered message."""
    try:
        if event.category is not Category.AFTER_SALES:
            return None
        return await _open_from_inquiry(event, deps, ctx)
    finally:
        await deps.inquiries.collection.delete_one({"_id": event.inquiry_id})


async def _open_from_inquiry(
    event: InquiryClassified, deps: Deps, ctx: Context
) -> tuple[Case, bool]:
    remembered = await deps.inquiries.load(event.inquiry_id)
    content = str(remembered.state.get("content", "")) if remembered else ""
    reference = remembered.state.get("order_reference") if remembered else None
    order = await find_order(reference, deps) if reference else None
    if order is not None and order.customer_id != event.customer_id:
        order = None  # never attach another customer's order to this case
    guess = deps.inferrer.infer(content)
    case_id = case_id_for(f"inquiry:{event.inquiry_id}")
    customer = Customer(
        customer_id=event.customer_id,
        channel=event.channel.value,
        language=notice_language(event.language),
        contact=_contact(order),
    )
    now = deps.clock()
    return await _create(
        case_id,
        lambda: domain.open_from_inquiry(
            case_id,
            customer,
            inquiry_id=event.inquiry_id,
            description=content,
            order_id=order.order_id if order else None,
            order_reference=reference,
            kind=guess.kind,
            reason=guess.reason,
            now=now,
        ),
        deps,
        ctx,
    )


# -- marketplace reviews --------------------------------------------------------------------------


async def receive_review(
    review: MarketplaceReview, deps: Deps, ctx: Context
) -> tuple[Case, bool] | None:
    """A 1-2 star review opens a case with a reply deadline; better ones are only counted."""
    marketplace = review.marketplace.lower()
    if review.rating > deps.policy.negative_review.max_rating:
        deps.metrics.reviews.labels(marketplace, str(review.rating)).inc()
        return None
    case_id = case_id_for(f"review:{marketplace}:{review.review_id}")
    order = await find_order(review.order_id, deps)
    language = notice_language(review.language or (order.language if order else None))
    now = deps.clock()
    result = await _create(
        case_id,
        lambda: domain.open_negative_review(
            case_id,
            review_id=review.review_id,
            marketplace=marketplace,
            order_id=review.order_id,
            customer_id=review.customer_id,
            rating=review.rating,
            text=redact_card_numbers(review.text),
            posted_at=review.posted_at,
            language=language,
            policy=deps.policy,
            now=now,
        ),
        deps,
        ctx,
    )
    if result[1]:
        deps.metrics.reviews.labels(marketplace, str(review.rating)).inc()
    return result


async def reply_to_review(
    case_id: str, reply: str, explanation: str, deps: Deps, ctx: Context, command_id: str | None
) -> Case:
    now = deps.clock()
    agent = ctx.actor_id or "agent"
    after, _, _ = await _act(
        case_id,
        lambda c: domain.answer_review(
            c,
            agent_id=agent,
            reply=redact_card_numbers(reply),
            explanation=redact_card_numbers(explanation),
            now=now,
        ),
        deps,
        ctx,
        message_id=command_id,
    )
    return after


# -- agents' and supervisors' steps ---------------------------------------------------------------


async def record_return_parcel(
    case_id: str, carrier: str, tracking_number: str, deps: Deps, ctx: Context
) -> Case:
    now = deps.clock()
    after, _, _ = await _act(
        case_id,
        lambda c: domain.record_return_parcel(
            c, carrier, tracking_number, actor_id=ctx.actor_id, now=now
        ),
        deps,
        ctx,
    )
    return after


async def move_case(
    case_id: str,
    target: CaseState,
    details: StepDetails,
    deps: Deps,
    ctx: Context,
    *,
    override_reason: str | None = None,
    command_id: str | None = None,
) -> Case:
    """One step of the state machine; with ``override_reason``, a supervisor's override."""
    now = deps.clock()
    note = redact_card_numbers(details.note)
    safe = replace(details, note=note)
    after, before, version = await _act(
        case_id,
        lambda c: domain.transition(
            c,
            target,
            safe,
            actor_id=ctx.actor_id or "agent",
            flows=deps.flows,
            policy=deps.policy,
            now=now,
            override_reason=override_reason,
        ),
        deps,
        ctx,
        message_id=command_id,
    )
    if override_reason is not None and before is not None:
        await _audit(
            "aftersales.override_transition", before, after, override_reason, version, deps, ctx
        )
    return after


async def decide_as_supervisor(
    case_id: str,
    verdict: Verdict,
    reason: str,
    deps: Deps,
    ctx: Context,
    command_id: str | None = None,
) -> Case:
    now = deps.clock()
    supervisor = ctx.actor_id or "supervisor"
    after, before, version = await _act(
        case_id,
        lambda c: domain.supervisor_decide(
            c,
            verdict,
            supervisor_id=supervisor,
            reason=redact_card_numbers(reason),
            policy=deps.policy,
            now=now,
        ),
        deps,
        ctx,
        message_id=command_id,
    )
    if before is not None:
        await _audit("aftersales.supervisor_decision", before, after, reason, version, deps, ctx)
    return after


async def _audit(
    action: str, before: Case, after: Case, reason: str, version: int, deps: Deps, ctx: Context
) -> None:
    decision = after.decision
    await deps.audit.record(
        actor=ctx.actor_id or "unknown",
        role=ctx.role or "unknown",
        action=action,
        subject=f"case:{after.id}",
        source="http",
        before={"state": before.state.value},
        after={
            "state": after.state.value,
            "verdict": decision.verdict.value if decision else None,
            "rule": decision.rule if decision else None,
        },
        reason=reason,
        entry_id=f"{after.id}:{version}",  # a retried write lands once
    )


# -- timers -------------------------------------------------------------------------------------


async def fire_due_timers(deps: Deps, *, limit: int = 100) -> int:
    """Reply deadlines and auto-closes whose moment has come (run by the background loop).
    The flags in the document make each fire once, also after a restart."""
    now = deps.clock()
    fired = 0
    for case_id in await deps.queries.due(now, limit):
        try:
            _, before, _ = await _act(
                case_id, lambda c: domain.fire_timers(c, now), deps, Context()
            )
        except DomainError:
            continue
        fired += before is not None
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
