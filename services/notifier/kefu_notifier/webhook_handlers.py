"""Webhook subscriptions' use cases: manage subscriptions, fan events out, deliver them.

Guarantee (README.md, "Webhook subscriptions"): each (subscription, event) pair is one delivery
document whose id is derived from both, inserted once (a redelivered event finds it and changes
nothing). A delivery is claimed (``sending``, with a lease) before its POST and recorded right
after it, so a delivered one is never POSTed again. The one window is a crash between the
receiver's 2xx and that write: the lease expires and it is POSTed again with the same
``X-Kefu-Delivery-Id`` (at least once, deduplicable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kefu_shared.contracts.notifier import (
    WebhookSubscriptionDisabled,
    WebhookSubscriptionDisabledReason,
)
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, new_id
from kefu_shared.outbox import OutboxMessage
from kefu_shared.tracing import continue_trace, current_trace_carrier

from kefu_notifier.adapters.metrics import WebhookMetrics
from kefu_notifier.adapters.webhook_store import (
    SubscriptionDirectory,
    WebhookLog,
    subscription_from_state,
    subscription_to_state,
    webhook_delivery_from_state,
    webhook_delivery_to_state,
)
from kefu_notifier.domain.policies import Backoff
from kefu_notifier.domain.ports import Clock
from kefu_notifier.domain.webhook_delivery import (
    WebhookDelivery,
    WebhookDeliveryNotDue,
)
from kefu_notifier.domain.webhook_ports import (
    TargetGuard,
    WebhookAttemptFailed,
    WebhookPoster,
    WebhookRequest,
)
from kefu_notifier.domain.webhook_subscription import (
    DisablePolicy,
    Subscription,
    SubscriptionStatus,
    new_secret,
)
from kefu_notifier.domain.webhook_targets import TargetRefused, parse_target

log = logging.getLogger(__name__)

SOURCE = "notifier"
TRACE_FIELD = "trace"


class SubscriptionNotFound(LookupError):
    pass


@dataclass
class WebhookDeps:
    subscriptions: VersionedDocumentStore
    deliveries: VersionedDocumentStore
    webhook_log: WebhookLog
    directory: SubscriptionDirectory
    poster: WebhookPoster
    guard: TargetGuard
    backoff: Backoff
    disable_policy: DisablePolicy
    send_lease: timedelta
    history_grace: timedelta
    events_topic: str
    metrics: WebhookMetrics
    clock: Clock
    wake_dispatcher: Callable[[], None] = field(default=lambda: None)


# --- managing subscriptions ---------------------------------------------------------------


async def create_subscription(
    *,
    target_url: str,
    event_types: tuple[str, ...],
    secret: str | None,
    description: str,
    created_by: str,
    deps: WebhookDeps,
) -> tuple[Subscription, str]:
    """Register a subscription; returns it with its secret (the only time it is shown).

    Raises TargetRefused for a URL that is not http(s) or reaches a non-public address.
    """
    target = await deps.guard.check(target_url)
    subscription = Subscription.create(
        subscription_id="wh_" + new_id()[:24],
        target_url=target.url,
        event_types=event_types,
        secret=secret or new_secret(),
        description=description,
        created_by=created_by,
        now=deps.clock(),
    )

    def decide(current: Stored | None) -> Change | None:
        return None if current is not None else Change(subscription_to_state(subscription))

    await deps.subscriptions.mutate(subscription.subscription_id, decide)
    deps.directory.invalidate()
    return subscription, subscription.secret


async def get_subscription(subscription_id: str, deps: WebhookDeps) -> Subscription:
    stored = await deps.subscriptions.load(subscription_id)
    if stored is None:
        raise SubscriptionNotFound(subscription_id)
    subscription = subscription_from_state(subscription_id, stored.state)
    if subscription.status is SubscriptionStatus.DELETED:
        raise SubscriptionNotFound(subscription_id)
    return subscription


async def pause_subscription(subscription_id: str, deps: WebhookDeps) -> Subscription:
    """Stop POSTing; matching events are still recorded and go out on resume."""
    return await _change_subscription(subscription_id, lambda s, now: s.pause(now), deps)


async def resume_subscription(subscription_id: str, deps: WebhookDeps) -> Subscription:
    """POST again, starting with what is pending (what matched while paused)."""
    subscription = await _change_subscription(subscription_id, lambda s, now: s.resume(now), deps)
    deps.wake_dispatcher()
    return subscription


async def delete_subscription(subscription_id: str, deps: WebhookDeps) -> None:
    """Stop for good: its secret is wiped and its deliveries are dropped."""
    await _change_subscription(subscription_id, lambda s, now: s.delete(now), deps)
    await deps.webhook_log.forget_deliveries(subscription_id)


async def _change_subscription(
    subscription_id: str,
    step: Callable[[Subscription, datetime], Subscription],
    deps: WebhookDeps,
) -> Subscription:
    now = deps.clock()
    missing: list[bool] = []

    def decide(current: Stored | None) -> Change | None:
        missing.clear()
        if current is None:
            missing.append(True)
            return None
        before = subscription_from_state(subscription_id, current.state)
        if before.status is SubscriptionStatus.DELETED:
            missing.append(True)
            return None
        after = step(before, now)  # SubscriptionConflict propagates to the API (409)
        return None if after == before else Change(subscription_to_state(after))

    outcome = await deps.subscriptions.mutate(subscription_id, decide)
    if missing or outcome.stored is None:
        raise SubscriptionNotFound(subscription_id)
    deps.directory.invalidate()
    return subscription_from_state(subscription_id, outcome.stored.state)


# --- fan-out ------------------------------------------------------------------------------


async def fan_out(envelope: Envelope[Any], deps: WebhookDeps) -> int:
    """Record one delivery per subscription that wants this event; returns how many are new.

    The delivery id comes from (subscription id, event id), so a redelivered event (or the
    same event read again after a rebalance) records nothing new.
    """
    subscriptions = await deps.directory.recording()
    wanted = [s for s in subscriptions if s.wants(envelope.type, envelope.time, deps.history_grace)]
    if not wanted:
        return 0
    body = envelope.model_dump_json()
    now = deps.clock()
    carrier = current_trace_carrier()
    recorded = 0
    for subscription in wanted:
        delivery = WebhookDelivery.record(
            subscription_id=subscription.subscription_id,
            event_id=envelope.id,
            event_type=envelope.type,
            event_source=envelope.source,
            event_subject=envelope.subject,
            correlation_id=envelope.correlation_id,
            body=body,
            now=now,
        )
        state = {**webhook_delivery_to_state(delivery), TRACE_FIELD: carrier}

        def decide(current: Stored | None, state: dict[str, Any] = state) -> Change | None:
            return None if current is not None else Change(state)

        outcome = await deps.deliveries.mutate(delivery.delivery_id, decide, message_id=envelope.id)
        if outcome.changed:
            recorded += 1
            deps.metrics.record(envelope.source)
    if recorded:
        deps.wake_dispatcher()
    return recorded


# --- delivery -----------------------------------------------------------------------------


async def dispatch_due_webhooks(deps: WebhookDeps, *, limit: int) -> int:
    """Attempt every due delivery of an active subscription; returns how many were due."""
    active = await deps.directory.active_ids()
    ids = await deps.webhook_log.due_delivery_ids(deps.clock(), active, limit)
    results = await asyncio.gather(
        *(attempt_webhook_delivery(i, deps) for i in ids), return_exceptions=True
    )
    for delivery_id, result in zip(ids, results, strict=True):
        if isinstance(result, Exception):
            # It stays due (or its lease expires): tried again, not lost.
            log.error("webhook delivery %s failed: %r", delivery_id, result, exc_info=result)
    return len(ids)


async def attempt_webhook_delivery(delivery_id: str, deps: WebhookDeps) -> WebhookDelivery | None:
    """POST one due delivery if its subscription is active, and record the outcome."""
    stored = await deps.deliveries.load(delivery_id)
    if stored is None:
        return None
    with continue_trace(stored.state.get(TRACE_FIELD)):
        return await _attempt(delivery_id, stored, deps)


async def _attempt(delivery_id: str, stored: Stored, deps: WebhookDeps) -> WebhookDelivery | None:
    now = deps.clock()
    delivery = webhook_delivery_from_state(delivery_id, stored.state)
    if not delivery.is_due(now):
        return None
    # Read the subscription now, not from the cache: a pause takes effect at once.
    sub_stored = await deps.subscriptions.load(delivery.subscription_id)
    if sub_stored is None:
        return None
    subscription = subscription_from_state(delivery.subscription_id, sub_stored.state)
    if subscription.status is not SubscriptionStatus.ACTIVE:
        return None
    claimed = await _transition(delivery_id, lambda d: d.claim(now, deps.send_lease), deps)
    if claimed is None:
        return None  # another worker got there first
    request = WebhookRequest(
        url=subscription.target_url,
        body=claimed.body.encode(),
        secret=subscription.secret,
        delivery_id=claimed.delivery_id,
        subscription_id=subscription.subscription_id,
        event_id=claimed.event_id,
        event_type=claimed.event_type,
        attempt=claimed.attempts + 1,
    )
    started = time.perf_counter()
    try:
        if deps.guard.enforcing:
            # Again at every attempt: the host may resolve elsewhere now (DNS rebinding).
            await deps.guard.check(subscription.target_url)
        status_code = await _post(deps.poster, request, deps.send_lease)
    except TargetRefused as exc:
        deps.metrics.attempts.labels("refused_target").inc()
        return await _failed(claimed, subscription, str(exc), None, deps)
    except WebhookAttemptFailed as exc:
        deps.metrics.attempt_seconds.observe(time.perf_counter() - started)
        deps.metrics.attempts.labels("failed").inc()
        return await _failed(claimed, subscription, str(exc), exc.status_code, deps)
    deps.metrics.attempt_seconds.observe(time.perf_counter() - started)
    deps.metrics.attempts.labels("ok").inc()
    after = await _transition(delivery_id, lambda d: d.succeeded(status_code, deps.clock()), deps)
    await _update_subscription(subscription.subscription_id, None, claimed, deps)
    return after


async def _post(poster: WebhookPoster, request: WebhookRequest, lease: timedelta) -> int:
    """Every failure becomes WebhookAttemptFailed: the loop never crashes on a receiver."""
    try:
        # Bounded by the lease: past it another worker may claim the delivery again.
        async with asyncio.timeout(lease.total_seconds()):
            return await poster.post(request)
    except WebhookAttemptFailed:
        raise
    except TimeoutError as exc:
        raise WebhookAttemptFailed("timed out") from exc
    except Exception as exc:
        raise WebhookAttemptFailed(f"error: {exc!r}") from exc


async def _failed(
    claimed: WebhookDelivery,
    subscription: Subscription,
    error: str,
    status_code: int | None,
    deps: WebhookDeps,
) -> WebhookDelivery | None:
    log.warning(
        "webhook delivery %s to %s failed: %s",
        claimed.delivery_id,
        subscription.subscription_id,
        error,
    )
    after = await _transition(
        claimed.delivery_id,
        lambda d: d.attempt_failed(error, status_code, backoff=deps.backoff, now=deps.clock()),
        deps,
    )
    await _update_subscription(subscription.subscription_id, error, claimed, deps)
    return after


async def _transition(
    delivery_id: str, step: Callable[[WebhookDelivery], WebhookDelivery], deps: WebhookDeps
) -> WebhookDelivery | None:
    """Apply one lifecycle step; None if the delivery moved on meanwhile."""

    def decide(current: Stored | None) -> Change | None:
        if current is None:
            return None
        try:
            after = step(webhook_delivery_from_state(delivery_id, current.state))
        except WebhookDeliveryNotDue:
            return None
        trace = current.state.get(TRACE_FIELD, {})
        return Change({**webhook_delivery_to_state(after), TRACE_FIELD: trace})

    outcome = await deps.deliveries.mutate(delivery_id, decide)
    if not outcome.changed or outcome.stored is None:
        return None
    after = webhook_delivery_from_state(delivery_id, outcome.stored.state)
    if after.final:
        deps.metrics.outcomes.labels(after.status.value).inc()
    return after


async def _update_subscription(
    subscription_id: str, error: str | None, delivery: WebhookDelivery, deps: WebhookDeps
) -> None:
    """Count the attempt's outcome on the subscription; disabling emits its event."""
    now = deps.clock()

    def decide(current: Stored | None) -> Change | None:
        if current is None:
            return None
        before = subscription_from_state(subscription_id, current.state)
        if before.status is SubscriptionStatus.DELETED:
            return None
        if error is None:
            after = before.delivery_succeeded(now)
        else:
            after = before.delivery_failed(error, now, deps.disable_policy)
        events = _disabled_events(before, after, delivery, deps)
        return Change(subscription_to_state(after), events)

    outcome = await deps.subscriptions.mutate(subscription_id, decide)
    if outcome.events:
        deps.metrics.disabled.inc()
        deps.directory.invalidate()
        log.warning("webhook subscription %s disabled: %s", subscription_id, error)


def _disabled_events(
    before: Subscription, after: Subscription, delivery: WebhookDelivery, deps: WebhookDeps
) -> list[OutboxMessage]:
    if before.status is after.status or after.status is not SubscriptionStatus.DISABLED:
        return []
    data = WebhookSubscriptionDisabled(
        subscription_id=after.subscription_id,
        target_host=parse_target(after.target_url).host,
        reason=WebhookSubscriptionDisabledReason(after.disabled_reason or "consecutive_failures"),
        detail=after.last_error or "",
        consecutive_failures=after.consecutive_failures,
        failing_since=after.failing_since or after.updated_at,
        last_delivery_id=delivery.delivery_id,
        disabled_at=after.disabled_at or after.updated_at,
    )
    envelope = Envelope.wrap(
        data, source=SOURCE, causation_id=delivery.event_id, time=after.updated_at
    )
    return [OutboxMessage.from_envelope(envelope, deps.events_topic)]
