"""The notifier's use cases: accept a request, attempt a due delivery, set preferences.

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
    NotificationRequested,
    NotificationSent,
    NotificationSuppressed,
    NotificationSuppressionReason,
)
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.outbox import OutboxMessage
from kefu_shared.pii import redact_card_numbers
from kefu_shared.tracing import continue_trace, current_trace_carrier

from kefu_notifier.adapters.metrics import NotifierMetrics
from kefu_notifier.adapters.store import (
    DeliveryLog,
    delivery_from_state,
    delivery_to_state,
    preferences_from_state,
    recent_sends_from_state,
)
from kefu_notifier.domain.catalogue import (
    DEFAULT_CHANNEL_ORDER,
    TRANSACTIONAL_PURPOSES,
    ChannelKind,
    Purpose,
    purpose_of,
)
from kefu_notifier.domain.delivery import Delivery, DeliveryNotDue, DeliveryStatus
from kefu_notifier.domain.policies import (
    Backoff,
    Decision,
    Preferences,
    QuietHours,
    RateLimit,
    Route,
    decide_attempt,
    routes_for,
)
from kefu_notifier.domain.ports import (
    ChannelSender,
    Clock,
    OutgoingMessage,
    ProviderError,
    Renderer,
    SendReceipt,
    TemplateError,
)

log = logging.getLogger(__name__)

SOURCE = "notifier"


class AttemptsAtOnce(Protocol):
    """Attempts of deliveries just accepted, run at once instead of through the dispatcher's
    due-time scan (``entrypoints.scheduler.AttemptAtOnce``)."""

    def reserve(self) -> bool:
        """Room for one more attempt now? If so it is held until ``start`` or ``cancel``."""
        ...

    def start(self, key: str) -> None:
        """Attempt ``key`` (accepted with its due entry held) in the reserved room."""
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


# --- intake -------------------------------------------------------------------------------


async def accept_request(
    request: NotificationRequested,
    *,
    message_id: str,
    correlation_id: str,
    deps: NotifierDeps,
) -> Delivery | None:
    """Record the request as a delivery (pending, or failed if it can never be sent).

    Returns the new delivery, or None if the idempotency key was seen before: whatever the
    envelope id, the same key is the same notification.
    """
    now = deps.clock()
    request = await _with_known_contact(_without_card_numbers(request), deps)
    delivery = _intake(request, message_id, correlation_id, deps, now)

    def decide(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        # The dispatch loop sends later: keep the request's trace to continue it then.
        state = {**delivery_to_state(delivery), TRACE_FIELD: current_trace_carrier()}
        return Change(state, _outbox(None, delivery, deps))

    # A pending delivery is attempted at once when there is room: its due entry (for the
    # dispatcher's scan) is then not written at all unless the attempt leaves it due.
    key = request.idempotency_key
    at_once = deps.at_once if delivery.status is DeliveryStatus.PENDING else None
    if at_once is not None and not at_once.reserve():
        at_once = None
    try:
        # A request is normally seen once: insert first, read only if the key exists already.
        outcome = await deps.deliveries.mutate(
            key, decide, message_id=message_id, expect_new=True, hold_due=at_once is not None
        )
    except BaseException:
        if at_once is not None:
            at_once.cancel()
        raise
    if not outcome.changed:
        if at_once is not None:
            at_once.cancel()
        log.info("notification %s already recorded; not sent again", key)
        return None
    _count(delivery, deps)
    if at_once is not None:
        at_once.start(key)
    elif delivery.status is DeliveryStatus.PENDING:
        deps.wake_dispatcher()
    return delivery


def _without_card_numbers(request: NotificationRequested) -> NotificationRequested:
    """Card numbers never reach a rendered text, the delivery log or a provider (DOMAIN.md 6)."""
    cleaned = {k: _redacted(v) for k, v in request.parameters.items()}
    if cleaned == request.parameters:
        return request
    return request.model_copy(update={"parameters": cleaned})


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_card_numbers(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


CONTACT_FIELD = "contact"
ADDRESS_FIELDS = ("email", "phone", "wechat_openid", "marketplace_im_id", "app_push_token")


async def _with_known_contact(
    request: NotificationRequested, deps: NotifierDeps
) -> NotificationRequested:
    """The notifier is where kefu knows how to reach a customer.

    A request that carries addresses updates the customer's contact card; a request without
    any (e.g. a survey asked for from events that carry no personal data) is addressed from it.
    """
    given = {f: v for f in ADDRESS_FIELDS if (v := getattr(request.recipient, f))}
    if not given:
        stored = await deps.customers.load(request.customer_id)
        known = (stored.state.get(CONTACT_FIELD) if stored else None) or {}
        if not known:
            return request
        recipient = request.recipient.model_copy(update=known)
        return request.model_copy(update={"recipient": recipient})

    def remember(current: Stored | None) -> Change | None:
        state = dict(current.state) if current else {}
        contact = {**(state.get(CONTACT_FIELD) or {}), **given}
        if contact == state.get(CONTACT_FIELD):
            return None
        return Change({**state, CONTACT_FIELD: contact})

    await deps.customers.mutate(request.customer_id, remember)
    return request


def _intake(
    request: NotificationRequested,
    message_id: str,
    correlation_id: str,
    deps: NotifierDeps,
    now: datetime,
) -> Delivery:
    common: dict[str, Any] = {
        "idempotency_key": request.idempotency_key,
        "customer_id": request.customer_id,
        "purpose": request.purpose,
        "template": request.template,
        "language": request.language.value,
        "requested_by": request.requested_by,
        "correlation_id": correlation_id,
        "request_message_id": message_id,
        "now": now,
    }
    template_purpose = purpose_of(request.template)
    if template_purpose is None:
        return Delivery.rejected(
            **common,
            reason=NotificationFailureReason.INVALID_TEMPLATE.value,
            detail=f"template: unknown template {request.template!r}",
        )
    if template_purpose != request.purpose:
        return Delivery.rejected(
            **common,
            reason=NotificationFailureReason.INVALID_TEMPLATE.value,
            detail=f"template: {request.template!r} belongs to purpose {template_purpose}, "
            f"not {request.purpose}",
        )
    try:
        content = deps.renderer.render(request.template, request.language.value, request.parameters)
    except TemplateError as exc:
        return Delivery.rejected(
            **common,
            reason=NotificationFailureReason.INVALID_TEMPLATE.value,
            detail=f"parameters: {exc}",
        )
    routes = routes_for(
        _addresses(request),
        deps.senders.keys(),
        request.preferred_channel,
        DEFAULT_CHANNEL_ORDER,
    )
    if not routes:
        return Delivery.rejected(
            **common,
            reason=NotificationFailureReason.NO_REACHABLE_CHANNEL.value,
            detail="recipient: no address for any configured channel",
        )
    return Delivery.requested(**common, routes=tuple(routes), content=content)


def _addresses(request: NotificationRequested) -> dict[ChannelKind, str]:
    r = request.recipient
    found = {
        ChannelKind.EMAIL: r.email,
        ChannelKind.SMS: r.phone,
        ChannelKind.WECHAT: r.wechat_openid,
        ChannelKind.MARKETPLACE_IM: r.marketplace_im_id,
        ChannelKind.APP_PUSH: r.app_push_token,
        # The shop's webhook identifies the customer by id; routes_for only uses it when asked.
        ChannelKind.WEBHOOK: request.customer_id,
    }
    return {channel: address for channel, address in found.items() if address}


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


async def attempt_accepted(key: str, deps: NotifierDeps) -> Delivery | None:
    """Attempt a delivery accepted a moment ago with its due entry held (``accept_request``).
    Whatever the attempt leaves due (a retry, a deferral, a failure before the claim's
    outcome was written) gets its due entry, so the dispatcher takes it from there."""
    try:
        return await attempt_delivery(key, deps, hold_due=True)
    finally:
        await deps.deliveries.release_due(key)


async def attempt_delivery(
    key: str, deps: NotifierDeps, *, hold_due: bool = False
) -> Delivery | None:
    """Apply the policies to one due delivery, then send it or defer/suppress/fail it."""
    now = deps.clock()
    # Usually accepted a moment ago by this process; every transition below re-checks it.
    stored = await deps.deliveries.load_recent(key)
    if stored is None:
        await _refresh_due(key, None, deps)
        return None
    with continue_trace(stored.state.get(TRACE_FIELD)):
        return await _attempt(key, stored, now, deps, hold_due=hold_due)


async def _attempt(
    key: str, stored: Stored, now: datetime, deps: NotifierDeps, *, hold_due: bool = False
) -> Delivery | None:
    delivery = delivery_from_state(key, stored.state)
    if not delivery.is_due(now):
        await _refresh_due(key, stored, deps)  # a stale due time: set it from the delivery
        return None
    decision, retry_at = await _decide_and_reserve(delivery, now, deps)
    if decision.suppress_reason is not None:
        reason = decision.suppress_reason
        return await _transition(key, _when_due(now, lambda d: d.suppress(reason, now)), deps)
    route = decision.send
    if route is None:  # decide_attempt always returns a route when it does not suppress
        raise AssertionError("no route decided")
    if decision.defer_until is not None:
        until, why = decision.defer_until, decision.defer_reason or "quiet_hours"
        return await _transition(
            key, _when_due(now, lambda d: d.defer(until, why, route.channel, now)), deps
        )
    if retry_at is not None:
        return await _transition(
            key,
            _when_due(now, lambda d: d.defer(retry_at, "rate_limit", route.channel, now)),
            deps,
        )
    # Held: a claimed delivery is due again when its lease ends, which only matters if this
    # process dies before the outcome's write (then reconcile, at the next start, restores it).
    claimed = await _transition(
        key, lambda d: d.claim(now, deps.send_lease), deps, hold_due=hold_due
    )
    if claimed is None:
        return None  # another worker got there first
    return await _send(claimed, route, deps)


async def _refresh_due(key: str, stored: Stored | None, deps: NotifierDeps) -> None:
    if deps.deliveries.due is not None:
        await deps.deliveries.due.refresh(key, stored)


async def _send(delivery: Delivery, route: Route, deps: NotifierDeps) -> Delivery | None:
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


async def _decide_and_reserve(
    delivery: Delivery, now: datetime, deps: NotifierDeps
) -> tuple[Decision, datetime | None]:
    """The policies on the customer's preferences and, if they let the notice go now, its slot
    in the customer's rate-limit window: one write to the customer, whose compare-and-set also
    checks the preferences the decision read. Returns the decision and, if the window is full,
    when the notice may go.

    Requests are keyed by customer id, so one consumer handles a customer and this
    read-modify-write does not race across replicas' consumers (see docs on FerretDB).
    """
    transactional = delivery.purpose in TRANSACTIONAL_PURPOSES
    decided: list[Decision] = []
    blocked: list[datetime] = []

    def decide(current: Stored | None) -> Change | None:
        decided.clear()
        blocked.clear()
        state = dict(current.state) if current else {}
        decision = decide_attempt(
            purpose=delivery.purpose,
            routes=delivery.routes,
            preferences=preferences_from_state(current.state if current else None),
            quiet_hours=deps.quiet_hours,
            transactional=transactional,
            now=now,
        )
        decided.append(decision)
        if decision.suppress_reason is not None or decision.defer_until is not None:
            return None
        recent = recent_sends_from_state(state)
        if not transactional:
            slot = deps.rate_limit.next_slot(recent, now)
            if slot is not None:
                blocked.append(slot)
                return None
        state["recent_sends"] = [*deps.rate_limit.recent(recent, now), now]
        return Change(state)

    await deps.customers.mutate(delivery.customer_id, decide)
    return decided[0], blocked[0] if blocked else None


def _when_due(
    now: datetime, step: Callable[[Delivery], Delivery]
) -> Callable[[Delivery], Delivery]:
    def guarded(delivery: Delivery) -> Delivery:
        if not delivery.is_due(now):
            raise DeliveryNotDue(f"{delivery.idempotency_key} moved on")
        return step(delivery)

    return guarded


async def _transition(
    key: str, step: Callable[[Delivery], Delivery], deps: NotifierDeps, *, hold_due: bool = False
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
        return Change(state, _outbox(before, after, deps))

    outcome = await deps.deliveries.mutate(key, decide, hold_due=hold_due)
    if not outcome.changed or outcome.stored is None:
        return None
    after = delivery_from_state(key, outcome.stored.state)
    _count(after, deps)
    return after


# --- events and metrics -------------------------------------------------------------------


def _outbox(before: Delivery | None, after: Delivery, deps: NotifierDeps) -> list[OutboxMessage]:
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


def _count(delivery: Delivery, deps: NotifierDeps) -> None:
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
