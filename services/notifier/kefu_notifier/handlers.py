"""The notifier's delivery use cases: attempt a due delivery, send a claimed one, set
preferences. Accepting a request is ``intake``'s.

Guarantee (see README.md): a request is recorded under its idempotency key exactly once; a
delivery is claimed (status ``sending``, with a lease) before its provider call and recorded as
``sent`` right after it. A recorded success is final, so neither a redelivered request nor a
retry nor a restart sends it again. The one window is a crash between the provider's accepting
the message and the ``sent`` write: then the lease expires and the message is sent again with
the same ``X-Kefu-Delivery-Id`` / Message-ID (at least once to the provider, deduplicable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from kefu_shared.contracts.notifier import (
    NotificationDeferralReason,
    NotificationDeferred,
    NotificationFailed,
    NotificationFailureReason,
    NotificationSent,
    NotificationSuppressed,
    NotificationSuppressionReason,
)
from kefu_shared.documents import Change, Stored, VersionedDocumentStore, state_of
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.mongo import Document
from kefu_shared.outbox import OutboxMessage
from kefu_shared.tracing import continue_trace

from kefu_notifier.adapters.metrics import NotifierMetrics
from kefu_notifier.adapters.store import (
    RECENT_SENDS_FIELD,
    DeliveryLog,
    delivery_from_state,
    delivery_to_state,
    preferences_from_state,
    recent_sends_from_state,
)
from kefu_notifier.domain.catalogue import TRANSACTIONAL_PURPOSES, ChannelKind, Purpose
from kefu_notifier.domain.delivery import Delivery, DeliveryNotDue, DeliveryStatus
from kefu_notifier.domain.policies import (
    Backoff,
    Preferences,
    QuietHours,
    RateLimit,
    Route,
    Verdict,
    judge,
)
from kefu_notifier.domain.ports import (
    ChannelSender,
    Clock,
    OutgoingMessage,
    ProviderError,
    Renderer,
    SendReceipt,
)

log = logging.getLogger(__name__)

SOURCE = "notifier"


class AttemptsAtOnce(Protocol):
    """Sends of deliveries claimed as they were accepted, run at once instead of through the
    dispatcher's due-time scan (``entrypoints.scheduler.AttemptAtOnce``)."""

    def reserve(self) -> bool:
        """Room for one more send now? If so it is held until ``start`` or ``cancel``."""
        ...

    def start(self, claimed: Delivery, route: Route) -> None:
        """Send ``claimed`` (recorded ``sending`` with its due entry held) in the reserved room."""
        ...

    def cancel(self) -> None:
        """Give the reserved room back unused."""
        ...


@dataclass
class NotifierDeps:
    deliveries: VersionedDocumentStore
    customers: VersionedDocumentStore
    delivery_log: DeliveryLog
    renderer: Renderer
    senders: Mapping[ChannelKind, ChannelSender]
    quiet_hours: QuietHours
    rate_limit: RateLimit
    backoff: Backoff
    send_lease: timedelta
    provider_timeout: float
    events_topic: str
    metrics: NotifierMetrics
    clock: Clock
    wake_dispatcher: Callable[[], None] = field(default=lambda: None)
    # None: every accepted delivery waits for the dispatcher's scan of the due times.
    at_once: AttemptsAtOnce | None = None


TRACE_FIELD = "trace"
"""Where a delivery keeps the W3C trace context of its request (see kefu_shared.tracing)."""


# --- delivery -----------------------------------------------------------------------------


async def dispatch_due(deps: NotifierDeps, *, limit: int) -> int:
    """Attempt every delivery whose time has come; returns how many were due."""
    keys = await deps.delivery_log.due_keys(deps.clock(), limit)
    results = await asyncio.gather(
        *(attempt_delivery(key, deps) for key in keys), return_exceptions=True
    )
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, Exception):
            # The delivery stays due (or its lease expires): it is tried again, not lost.
            log.error("attempting delivery %s failed: %r", key, result, exc_info=result)
    return len(keys)


async def attempt_delivery(key: str, deps: NotifierDeps) -> Delivery | None:
    """Apply the policies to one due delivery, then send it or defer/suppress/fail it."""
    now = deps.clock()
    # Often accepted a moment ago by this process; every transition below re-checks it.
    stored = await deps.deliveries.load_recent(key)
    if stored is None:
        await _refresh_due(key, None, deps)
        return None
    with continue_trace(stored.state.get(TRACE_FIELD)):
        return await _attempt(key, stored, now, deps)


async def _attempt(key: str, stored: Stored, now: datetime, deps: NotifierDeps) -> Delivery | None:
    delivery = delivery_from_state(key, stored.state)
    if not delivery.is_due(now):
        await _refresh_due(key, stored, deps)  # a stale due time: set it from the delivery
        return None
    verdict = await _judge_and_reserve(delivery, now, deps)
    judged = await _transition(key, lambda d: d.judged(verdict, now, deps.send_lease), deps)
    if judged is None or not verdict.sends_now or verdict.route is None:
        return judged  # deferred or suppressed, or another worker got there first
    return await send_claimed(judged, verdict.route, deps)


async def _refresh_due(key: str, stored: Stored | None, deps: NotifierDeps) -> None:
    if deps.deliveries.due is not None:
        await deps.deliveries.due.refresh(key, stored)


async def send_claimed(delivery: Delivery, route: Route, deps: NotifierDeps) -> Delivery | None:
    """Call the provider for a delivery claimed for ``route`` and record the outcome."""
    key = delivery.idempotency_key
    sender = deps.senders.get(route.channel)
    if sender is None or delivery.content is None:
        detail = f"channel {route.channel} is no longer configured"
        reason = NotificationFailureReason.NO_REACHABLE_CHANNEL.value
        return await _transition(key, lambda d: d.fail(reason, detail, deps.clock()), deps)
    message = OutgoingMessage(
        delivery_id=delivery.delivery_id,
        idempotency_key=key,
        customer_id=delivery.customer_id,
        purpose=delivery.purpose,
        channel=route.channel,
        address=route.address,
        language=delivery.language,
        subject=delivery.content.subject,
        body=delivery.content.body,
    )
    started = time.perf_counter()
    try:
        receipt = await _call_provider(sender, message, deps.provider_timeout)
    except ProviderError as exc:
        deps.metrics.delivery_seconds.labels(route.channel.value).observe(
            time.perf_counter() - started
        )
        outcome = "retryable_error" if exc.retryable else "permanent_error"
        deps.metrics.provider_attempts.labels(route.channel.value, outcome).inc()
        log.warning("delivery %s via %s failed: %s", key, route.channel, exc)
        error, retryable = str(exc), exc.retryable
        return await _transition(
            key,
            lambda d: d.attempt_failed(
                route.channel, error, retryable=retryable, backoff=deps.backoff, now=deps.clock()
            ),
            deps,
        )
    deps.metrics.delivery_seconds.labels(route.channel.value).observe(time.perf_counter() - started)
    deps.metrics.provider_attempts.labels(route.channel.value, "ok").inc()
    provider_id = receipt.provider_message_id
    return await _transition(
        key, lambda d: d.succeeded(route.channel, provider_id, deps.clock()), deps
    )


async def _call_provider(
    sender: ChannelSender, message: OutgoingMessage, timeout: float
) -> SendReceipt:
    """Every failure of a provider becomes a ProviderError: the loop never crashes on one."""
    try:
        # The adapters have their own timeouts; this one bounds an adapter that forgets.
        async with asyncio.timeout(timeout * 2):
            return await sender.send(message)
    except ProviderError:
        raise
    except TimeoutError as exc:
        raise ProviderError(f"{message.channel} provider timed out", retryable=True) from exc
    except Exception as exc:
        raise ProviderError(f"{message.channel} provider error: {exc!r}", retryable=True) from exc


def verdict_for(
    delivery: Delivery, customer: Document | None, now: datetime, deps: NotifierDeps
) -> Verdict:
    """The policies on a due delivery, for the customer's preferences and sends as stored."""
    return judge(
        purpose=delivery.purpose,
        routes=delivery.routes,
        preferences=preferences_from_state(customer),
        recent_sends=recent_sends_from_state(customer),
        quiet_hours=deps.quiet_hours,
        rate_limit=deps.rate_limit,
        transactional=delivery.purpose in TRANSACTIONAL_PURPOSES,
        now=now,
    )


async def _judge_and_reserve(delivery: Delivery, now: datetime, deps: NotifierDeps) -> Verdict:
    """The verdict and, if it sends now, the notice's slot in the customer's rate-limit window:
    one write to the customer, whose compare-and-set also checks the preferences it read.

    Requests are keyed by customer id, so one consumer handles a customer and this
    read-modify-write does not race across replicas' consumers (see docs on FerretDB).
    """
    verdicts: list[Verdict] = []

    def decide(current: Stored | None) -> Change | None:
        verdicts.clear()
        verdict = verdict_for(delivery, state_of(current), now, deps)
        verdicts.append(verdict)
        if verdict.recent_sends is None:
            return None
        state = dict(current.state) if current else {}
        return Change({**state, RECENT_SENDS_FIELD: list(verdict.recent_sends)})

    await deps.customers.mutate(delivery.customer_id, decide)
    return verdicts[0]


async def _transition(
    key: str, step: Callable[[Delivery], Delivery], deps: NotifierDeps
) -> Delivery | None:
    """Apply one lifecycle step with its events; None if the delivery moved on meanwhile."""

    def decide(current: Stored | None) -> Change | None:
        if current is None:
            return None
        before = delivery_from_state(key, current.state)
        try:
            after = step(before)
        except DeliveryNotDue:
            return None
        state = {**delivery_to_state(after), TRACE_FIELD: current.state.get(TRACE_FIELD, {})}
        return Change(state, events_of(before, after, deps))

    outcome = await deps.deliveries.mutate(key, decide)
    if not outcome.changed or outcome.stored is None:
        return None
    after = delivery_from_state(key, outcome.stored.state)
    count_outcome(after, deps)
    return after


# --- events and metrics -------------------------------------------------------------------


def events_of(before: Delivery | None, after: Delivery, deps: NotifierDeps) -> list[OutboxMessage]:
    """The event a step from ``before`` (None: just accepted) to ``after`` publishes, if any."""
    data = _event(before, after)
    if data is None:
        return []
    envelope = Envelope.wrap(
        data,
        source=SOURCE,
        correlation_id=after.correlation_id,
        causation_id=after.request_message_id,
        time=after.updated_at,
    )
    return [OutboxMessage.from_envelope(envelope, deps.events_topic)]


def _event(before: Delivery | None, after: Delivery) -> EventData | None:
    if (
        before is not None
        and before.status == after.status
        and after.status is not (DeliveryStatus.DEFERRED)
    ):
        return None
    common: dict[str, Any] = {
        "idempotency_key": after.idempotency_key,
        "delivery_id": after.delivery_id,
        "customer_id": after.customer_id,
        "purpose": after.purpose,
        "template": after.template,
        "requested_by": after.requested_by,
    }
    if after.status is DeliveryStatus.SENT and after.channel is not None:
        return NotificationSent(
            **common,
            channel=after.channel,
            attempts=after.attempts,
            sent_at=after.sent_at or after.updated_at,
            provider_message_id=after.provider_message_id,
        )
    if after.status is DeliveryStatus.FAILED:
        return NotificationFailed(
            **common,
            reason=NotificationFailureReason(after.reason or "retries_exhausted"),
            detail=after.last_error or "",
            channel=after.channel,
            attempts=after.attempts,
            failed_at=after.updated_at,
        )
    if after.status is DeliveryStatus.SUPPRESSED:
        return NotificationSuppressed(
            **common,
            reason=NotificationSuppressionReason(after.reason or "opted_out_purpose"),
            suppressed_at=after.updated_at,
        )
    if (
        after.status is DeliveryStatus.DEFERRED
        and after.channel is not None
        and after.next_attempt_at is not None
    ):
        return NotificationDeferred(
            **common,
            reason=NotificationDeferralReason(after.reason or "quiet_hours"),
            channel=after.channel,
            deferred_until=after.next_attempt_at,
        )
    return None


def count_outcome(delivery: Delivery, deps: NotifierDeps) -> None:
    if delivery.status in (
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.DEFERRED,
        DeliveryStatus.SUPPRESSED,
    ):
        channel = delivery.channel.value if delivery.channel else None
        deps.metrics.outcome(channel, delivery.purpose.value, delivery.status.value)


# --- preferences --------------------------------------------------------------------------


async def set_preferences(
    customer_id: str,
    *,
    opted_out_purposes: frozenset[Purpose],
    opted_out_channels: frozenset[ChannelKind],
    deps: NotifierDeps,
) -> Preferences:
    """Replace the customer's opt-outs; pending and deferred deliveries honour them too."""
    now = deps.clock()

    def decide(current: Stored | None) -> Change:
        state = dict(current.state) if current else {}
        state["opted_out_purposes"] = sorted(p.value for p in opted_out_purposes)
        state["opted_out_channels"] = sorted(c.value for c in opted_out_channels)
        state["preferences_updated_at"] = now
        return Change(state)

    await deps.customers.mutate(customer_id, decide)
    return Preferences(opted_out_purposes, opted_out_channels)


async def get_preferences(customer_id: str, deps: NotifierDeps) -> Preferences:
    stored = await deps.customers.load(customer_id)
    return preferences_from_state(stored.state if stored else None)
