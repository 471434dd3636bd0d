"""Use cases: record facts, invite and hear customers, run survey rounds, compute the KPIs.

Each use case loads what it needs, lets the domain decide, and stores the decision with its
events in one document write (the outbox). Envelope ids of published events are derived from
the survey (round) id and the step, so a redelivered input never publishes a second, different
event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kefu_shared import topics
from kefu_shared.contracts.aftersales import AftersalesCaseClosed, AftersalesEvent
from kefu_shared.contracts.feedback import (
    SurveyAnswered,
    SurveyEvent,
    SurveyFollowUpRaised,
    SurveyKind,
    SurveyRoundStarted,
    SurveySent,
)
from kefu_shared.contracts.inquiry import Category, InquiryEvent, InquiryResolved
from kefu_shared.contracts.notifier import (
    NotificationFailed,
    NotificationPurpose,
    NotificationSent,
    NotificationSuppressed,
    NotificationSuppressionReason,
)
from kefu_shared.contracts.orders import OrderEvent
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, EventData, utcnow
from kefu_shared.outbox import OutboxMessage
from pydantic import ValidationError

from kefu_feedback.adapters.metrics import FeedbackMetrics
from kefu_feedback.adapters.notifications import REQUESTED_BY, Invitation, invitation_request
from kefu_feedback.adapters.store import (
    FactStore,
    SurveyQueries,
    customer_from_state,
    customer_to_state,
    round_from_state,
    round_to_state,
    survey_from_state,
    survey_to_state,
)
from kefu_feedback.domain import kpis
from kefu_feedback.domain.calendar import BusinessCalendar
from kefu_feedback.domain.facts import Fact
from kefu_feedback.domain.intake import (
    fact_of_case_closed,
    facts_of_inquiry_event,
    facts_of_order_event,
)
from kefu_feedback.domain.links import SurveyLinks
from kefu_feedback.domain.policy import FeedbackPolicy
from kefu_feedback.domain.rounds import (
    RoundConflict,
    RoundStatus,
    SurveyRound,
    quarter_of,
    sample,
)
from kefu_feedback.domain.survey import (
    Answer,
    SkipReason,
    Survey,
    SurveyCustomer,
    SurveyError,
    SurveyStatus,
    reserve,
    skip_reason,
    survey_id_for,
)

log = logging.getLogger(__name__)
SOURCE = "feedback"


class UnknownSurvey(SurveyError):
    pass


@dataclass
class Deps:
    facts: FactStore
    surveys: VersionedDocumentStore
    customers: VersionedDocumentStore
    rounds: VersionedDocumentStore
    queries: SurveyQueries
    policy: FeedbackPolicy
    calendar: BusinessCalendar
    links: SurveyLinks
    metrics: FeedbackMetrics
    topic: Callable[[str], str]
    clock: Callable[[], datetime] = utcnow
    wake_rounds: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class Context:
    """Where a command came from, for the events' correlation and causation ids."""

    correlation_id: str | None = None
    causation_id: str | None = None


def stable_id(*parts: str) -> str:
    """The envelope id of an event caused by this input: the same on every redelivery."""
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


def _outbox(data: EventData, topic: str, ctx: Context, event_id: str) -> OutboxMessage:
    envelope = Envelope.wrap(
        data,
        source=SOURCE,
        correlation_id=ctx.correlation_id,
        causation_id=ctx.causation_id,
        event_id=event_id,
    )
    return OutboxMessage.from_envelope(envelope, topic)


async def _record(facts: list[Fact], deps: Deps) -> None:
    for fact in facts:
        recorded, _ = await deps.facts.record([fact])
        deps.metrics.facts.labels(fact.kind.value, "recorded" if recorded else "duplicate").inc()


# --- facts from other services ------------------------------------------------------------


async def record_inquiry_event(event: InquiryEvent, ctx: Context, deps: Deps) -> None:
    await _record(facts_of_inquiry_event(event), deps)
    if isinstance(event, InquiryResolved):
        await invite_after_inquiry(event, ctx, deps)


async def record_order_event(event: OrderEvent, deps: Deps) -> None:
    await _record(facts_of_order_event(event), deps)


async def record_aftersales_event(event: AftersalesEvent, ctx: Context, deps: Deps) -> None:
    if not isinstance(event, AftersalesCaseClosed):
        return
    await _record([fact_of_case_closed(event)], deps)
    survey_id = survey_id_for(SurveyKind.AFTERSALES, event.case_id)
    spec = Survey(
        survey_id=survey_id,
        kind=SurveyKind.AFTERSALES,
        customer_id=event.customer_id,
        case_id=event.case_id,
        agent_id=event.actor_id,
        channel=event.channel,
        category=event.kind.value,
        language=event.language,
        status=SurveyStatus.INVITED,
        case_at=event.closed_at,
        created_at=deps.clock(),
        correlation_id=ctx.correlation_id or "",
    )
    invitation = Invitation(
        survey_id=survey_id,
        customer_id=event.customer_id,
        language=event.language,
        channel=event.channel,
        email=event.contact.email,
        phone=event.contact.phone,
    )
    await invite(spec, invitation, ctx, deps)


# --- invitations --------------------------------------------------------------------------


async def invite_after_inquiry(event: InquiryResolved, ctx: Context, deps: Deps) -> Survey | None:
    if event.by_bot and not deps.policy.survey.survey_bot_resolved:
        return None
    if event.category is Category.SPAM:
        return None
    opened = await deps.facts.get(f"opened:{event.inquiry_id}")
    language = (opened.language if opened else None) or "zh"
    survey_id = survey_id_for(SurveyKind.INQUIRY, event.inquiry_id)
    spec = Survey(
        survey_id=survey_id,
        kind=SurveyKind.INQUIRY,
        customer_id=event.customer_id,
        inquiry_id=event.inquiry_id,
        agent_id=event.agent_id,
        channel=event.channel.value,
        category=event.category.value if event.category else None,
        language=language,
        status=SurveyStatus.INVITED,
        case_at=event.occurred_at,
        created_at=deps.clock(),
        correlation_id=ctx.correlation_id or "",
    )
    invitation = Invitation(
        survey_id=survey_id,
        customer_id=event.customer_id,
        language=language,
        channel=event.channel.value,
    )
    return await invite(spec, invitation, ctx, deps)


async def invite(spec: Survey, invitation: Invitation, ctx: Context, deps: Deps) -> Survey:
    """Create the survey once: invited (a NotificationRequested in its outbox) or skipped.

    The customer's document is reserved first (opt-out and the N-day rule are decided there,
    serialised per customer); a crash between the two writes is resumed by the redelivery,
    which finds its own reservation and goes on.
    """
    existing = await deps.surveys.load(spec.survey_id)
    if existing is not None:
        return survey_from_state(existing.state)  # once per case
    now = deps.clock()
    policy = deps.policy.survey
    verdict: list[SkipReason | None] = [None]

    def decide_customer(current: Stored | None) -> Change | None:
        customer = customer_from_state(spec.customer_id, current.state if current else None)
        verdict[0] = skip_reason(customer, spec.survey_id, spec.case_at, now, policy)
        if verdict[0] is not None or customer.last_survey_id == spec.survey_id:
            return None
        return Change(customer_to_state(reserve(customer, spec.survey_id, spec.case_at)))

    await deps.customers.mutate(spec.customer_id, decide_customer)
    why = verdict[0]
    events: list[OutboxMessage] = []
    if why is None:
        try:
            request = invitation_request(invitation, deps.links.url(spec.survey_id), policy)
        except ValidationError as exc:
            log.warning("survey %s: the notifier could not accept it: %s", spec.survey_id, exc)
            why = SkipReason.UNREACHABLE
        else:
            events.append(
                _outbox(
                    request,
                    deps.topic(topics.NOTIFICATION_REQUESTS),
                    ctx,
                    stable_id(spec.survey_id, "invitation"),
                )
            )
    survey = spec.model_copy(
        update={
            "status": SurveyStatus.SKIPPED if why else SurveyStatus.INVITED,
            "reason": why.value if why else None,
            "created_at": now,
        }
    )

    def decide_survey(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        return Change(survey_to_state(survey), events)

    outcome = await deps.surveys.mutate(spec.survey_id, decide_survey)
    if outcome.changed:
        label = f"skipped_{why.value}" if why else "invited"
        deps.metrics.surveys.labels(spec.kind.value, label).inc()
        return survey
    assert outcome.stored is not None
    return survey_from_state(outcome.stored.state)


# --- delivery reports from the notifier ---------------------------------------------------


NotifierEvent = NotificationSent | NotificationFailed | NotificationSuppressed


def _survey_event_fields(s: Survey) -> dict[str, object]:
    return {
        "survey_id": s.survey_id,
        "kind": s.kind,
        "customer_id": s.customer_id,
        "inquiry_id": s.inquiry_id,
        "case_id": s.case_id,
        "round_id": s.round_id,
        "agent_id": s.agent_id,
        "channel": s.channel,
    }


def _survey_event(cls: type[SurveyEvent], s: Survey, **fields: object) -> SurveyEvent:
    return cls.model_validate({**_survey_event_fields(s), **fields})


async def record_delivery(event: NotifierEvent, ctx: Context, deps: Deps) -> Survey | None:
    """The notifier's report on an invitation: delivered (``survey.sent``) or undeliverable."""
    if event.requested_by != REQUESTED_BY or event.purpose != NotificationPurpose.SURVEY_INVITATION:
        return None
    survey_id = event.idempotency_key
    topic = deps.topic(topics.FEEDBACK_EVENTS)

    def decide(current: Stored | None) -> Change | None:
        if current is None:
            return None  # not ours (or not recorded): nothing to update
        before = survey_from_state(current.state)
        out: list[OutboxMessage] = []
        if isinstance(event, NotificationSent):
            after = before.delivered(event.sent_at, event.channel.value)
            if not after.sent_event_emitted:
                sent = _survey_event(
                    SurveySent,
                    after,
                    notification_channel=event.channel.value,
                    sent_at=event.sent_at,
                )
                out.append(_outbox(sent, topic, ctx, stable_id(survey_id, "sent")))
                after = after.model_copy(update={"sent_event_emitted": True})
        elif isinstance(event, NotificationFailed):
            after = before.undeliverable(f"failed: {event.reason.value}")
        else:
            after = before.undeliverable(f"suppressed: {event.reason.value}")
        if after == before:
            return None
        return Change(survey_to_state(after), out)

    outcome = await deps.surveys.mutate(survey_id, decide, message_id=ctx.causation_id)
    if outcome.stored is None:
        return None
    survey = survey_from_state(outcome.stored.state)
    if outcome.changed:
        deps.metrics.surveys.labels(survey.kind.value, survey.status.value).inc()
    if (
        isinstance(event, NotificationSuppressed)
        and event.reason is NotificationSuppressionReason.OPTED_OUT_PURPOSE
    ):
        # The customer told the notifier "no surveys": do not even ask it again.
        await set_opt_out(event.customer_id, True, deps)
    return survey


# --- answers ------------------------------------------------------------------------------


async def answer_survey(survey_id: str, answer: Answer, submission_id: str, deps: Deps) -> Survey:
    """Record the first answer of a survey with its events; the same answer again changes
    nothing; a different one raises AlreadyAnswered. Unknown survey: UnknownSurvey."""
    topic = deps.topic(topics.FEEDBACK_EVENTS)
    policy = deps.policy.survey

    def decide(current: Stored | None) -> Change | None:
        if current is None:
            raise UnknownSurvey(f"survey_id: no survey {survey_id!r}")
        before = survey_from_state(current.state)
        after = before.answered(answer, policy)
        if after is before:
            return None
        ctx = Context(correlation_id=before.correlation_id or None, causation_id=submission_id)
        answered = _survey_event(
            SurveyAnswered,
            after,
            overall=answer.overall,
            ratings=answer.ratings,
            comment=answer.comment,
            source=answer.source,
            answered_at=answer.answered_at,
        )
        events = [_outbox(answered, topic, ctx, stable_id(survey_id, "answered"))]
        if after.follow_up is not None:
            follow_up = _survey_event(
                SurveyFollowUpRaised,
                after,
                overall=answer.overall,
                low_dimensions=after.follow_up.low_dimensions,
                comment=answer.comment,
                route=after.follow_up.route,
                raised_at=answer.answered_at,
            )
            events.append(_outbox(follow_up, topic, ctx, stable_id(survey_id, "follow_up")))
        return Change(survey_to_state(after), events)

    outcome = await deps.surveys.mutate(survey_id, decide, message_id=submission_id)
    assert outcome.stored is not None
    survey = survey_from_state(outcome.stored.state)
    if outcome.changed:
        deps.metrics.surveys.labels(survey.kind.value, "answered").inc()
        if survey.follow_up is not None:
            deps.metrics.follow_ups.labels(survey.follow_up.route.value).inc()
    return survey


async def load_survey(survey_id: str, deps: Deps) -> Survey | None:
    stored = await deps.surveys.load(survey_id)
    return survey_from_state(stored.state) if stored else None


# --- customers' wishes --------------------------------------------------------------------


async def set_opt_out(customer_id: str, opted_out: bool, deps: Deps) -> SurveyCustomer:
    def decide(current: Stored | None) -> Change | None:
        customer = customer_from_state(customer_id, current.state if current else None)
        if customer.opted_out == opted_out and current is not None:
            return None
        return Change(customer_to_state(customer.model_copy(update={"opted_out": opted_out})))

    outcome = await deps.customers.mutate(customer_id, decide)
    return customer_from_state(customer_id, outcome.stored.state if outcome.stored else None)


async def get_customer(customer_id: str, deps: Deps) -> SurveyCustomer:
    stored = await deps.customers.load(customer_id)
    return customer_from_state(customer_id, stored.state if stored else None)


# --- survey rounds ------------------------------------------------------------------------


async def start_round(
    round_id: str,
    sample_size: int,
    lookback_days: int,
    ctx: Context,
    deps: Deps,
    *,
    started_by: str = "api",
    skip_if_empty: bool = False,
) -> SurveyRound | None:
    """Draw the sample and record the round (``survey.round_started``); a background loop
    then sends the invitations. The same round again returns it (RoundConflict if it differs)."""
    existing = await deps.rounds.load(round_id)
    if existing is not None:
        found = round_from_state(existing.state)
        if (found.requested_sample_size, found.lookback_days) != (sample_size, lookback_days):
            raise RoundConflict(
                f"round_id: {round_id!r} exists with sample_size={found.requested_sample_size}, "
                f"lookback_days={found.lookback_days}"
            )
        return found
    now = deps.clock()
    population = await deps.facts.customers_served(now - timedelta(days=lookback_days), now)
    cooldown = timedelta(days=deps.policy.survey.cooldown_days)
    excluded = await deps.queries.not_to_survey(now - cooldown)
    sampled = sample(population - excluded, sample_size, seed=round_id)
    if skip_if_empty and not sampled:
        return None  # nobody to ask yet: the scheduler tries again later
    survey_round = SurveyRound(
        round_id=round_id,
        requested_sample_size=sample_size,
        lookback_days=lookback_days,
        population=len(population),
        sampled=sampled,
        pending=sampled,
        started_at=now,
        status=RoundStatus.ISSUING if sampled else RoundStatus.DONE,
        started_by=started_by,
    )
    started = SurveyRoundStarted(
        round_id=round_id,
        requested_sample_size=sample_size,
        sampled=len(sampled),
        population=len(population),
        lookback_days=lookback_days,
        started_at=now,
    )
    event = _outbox(
        started, deps.topic(topics.FEEDBACK_EVENTS), ctx, stable_id(round_id, "round_started")
    )

    def decide(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        return Change(round_to_state(survey_round), [event])

    outcome = await deps.rounds.mutate(round_id, decide)
    assert outcome.stored is not None
    deps.wake_rounds()
    return round_from_state(outcome.stored.state)


async def get_round(round_id: str, deps: Deps) -> SurveyRound | None:
    stored = await deps.rounds.load(round_id)
    return round_from_state(stored.state) if stored else None


async def issue_round_invitations(deps: Deps, *, batch: int = 50) -> int:
    """Send the next invitations of every round still issuing; returns how many were handled.

    Each survey id is derived from round and customer, so a crash mid-batch re-issues nothing
    twice: the invitation use case finds the survey and moves on.
    """
    handled = 0
    for round_id in await deps.queries.rounds_issuing(limit=20):
        stored = await deps.rounds.load(round_id)
        if stored is None:
            continue
        survey_round = round_from_state(stored.state)
        done: list[str] = []
        ctx = Context(causation_id=stable_id(round_id, "round_started"))
        for customer_id in survey_round.pending[:batch]:
            language = await deps.facts.latest_language(customer_id) or "zh"
            survey_id = survey_id_for(SurveyKind.ROUND, customer_id, round_id=round_id)
            spec = Survey(
                survey_id=survey_id,
                kind=SurveyKind.ROUND,
                customer_id=customer_id,
                round_id=round_id,
                language=language,
                status=SurveyStatus.INVITED,
                case_at=survey_round.started_at,
                created_at=deps.clock(),
            )
            invitation = Invitation(survey_id, customer_id, language, channel=None)
            await invite(spec, invitation, ctx, deps)
            done.append(customer_id)

        def decide(current: Stored | None, done: list[str] = done) -> Change | None:
            if current is None:
                return None
            return Change(round_to_state(round_from_state(current.state).issued(done)))

        await deps.rounds.mutate(round_id, decide)
        handled += len(done)
    return handled


async def start_quarterly_round(
    deps: Deps, sample_size: int, lookback_days: int, day_of_quarter: int
) -> SurveyRound | None:
    """The automatic round of the current quarter (DOMAIN.md 4.1: at least quarterly), once:
    its id is the quarter, e.g. ``2026-Q2``. It starts ``day_of_quarter`` days into the quarter,
    and not before anyone could be sampled (a new installation does not use its quarter up)."""
    now = deps.clock()
    first_month = (now.month - 1) // 3 * 3 + 1
    quarter_start = now.replace(month=first_month, day=1, hour=0, minute=0, second=0, microsecond=0)
    if now < quarter_start + timedelta(days=day_of_quarter):
        return None
    round_id = quarter_of(now)
    if await deps.rounds.load(round_id) is not None:
        return None
    return await start_round(
        round_id,
        sample_size,
        lookback_days,
        Context(),
        deps,
        started_by="schedule",
        skip_if_empty=True,
    )


# --- KPIs ---------------------------------------------------------------------------------


async def compute_kpis(query: kpis.KpiQuery, deps: Deps) -> kpis.KpiReport:
    facts = await deps.facts.facts_for(query.start, query.end)
    surveys = await deps.queries.records_for(query.start, query.end)
    return kpis.compute(query, facts, surveys, deps.calendar, deps.policy.kpis, deps.clock())


async def refresh_gauges(deps: Deps, window: timedelta, channels: tuple[str, ...]) -> None:
    """The rolling window's KPIs as Prometheus gauges, overall and per channel."""
    now = deps.clock()
    facts = await deps.facts.facts_for(now - window, now)
    surveys = await deps.queries.records_for(now - window, now)
    m = deps.metrics
    for channel in (None, *channels):
        q = kpis.KpiQuery(now - window, now, channel=channel)
        r = kpis.compute(q, facts, surveys, deps.calendar, deps.policy.kpis, now)
        label = channel or "all"
        for measure, kpi in (
            ("first_response", r.first_response),
            ("next_response", r.next_response),
            ("resolution", r.resolution),
        ):
            for stat in ("mean", "p50", "p90"):
                value = getattr(kpi.clock, stat)
                m.response_seconds.labels(measure, stat, label).set(_or_nan(value))
        for sla in r.sla:
            m.sla_hit_ratio.labels(sla.sla, label).set(_or_nan(sla.hit_rate))
        for name, rate in (
            ("first_contact_resolution", r.first_contact_resolution),
            ("reopen", r.reopen),
            ("csat", r.csat),
            ("survey_response", r.survey_response),
            ("conversion", r.conversion),
            ("bot_answer", r.bot_answer),
        ):
            m.ratio.labels(name, label).set(_or_nan(rate.value))
        if channel is None:
            for dimension, rate in r.csat_by_dimension.items():
                m.csat_dimension.labels(dimension).set(_or_nan(rate.value))
            m.lost_orders.set(r.lost_orders)


def _or_nan(value: float | None) -> float:
    # No data is not 0 %: NaN keeps alerts on ratios from firing on an empty window.
    return float("nan") if value is None else value


async def run_every(seconds: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """A background loop: run ``step`` every ``seconds``; a failure is logged, not fatal."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.1fs", what, seconds)
        await asyncio.sleep(seconds)
