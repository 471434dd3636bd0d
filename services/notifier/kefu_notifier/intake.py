"""Accepting a notification request: recorded once under its idempotency key.

A request is addressed from the customer's contact card when it carries no addresses (and
updates the card when it does), rendered once, routed and recorded as a delivery.

When there is room to send it at once (``NotifierDeps.at_once``), the policies are applied
before the delivery is first recorded: one write to the customer holds both the contact card and
the notice's slot in the rate-limit window, and the delivery is inserted already claimed
(``sending``), deferred or suppressed. Recording it pending and claiming it afterwards costs two
writes more per notice (the slot and the claim; ``bench.wall`` counts them). Its crash windows:

- after the customer's write, before the delivery's insert: the redelivered request finds its
  idempotency key applied to the customer, so it is recorded pending for the dispatcher, whose
  attempt takes a slot again. The rate limit then counts the notice twice, never zero times.
- after the insert, before the provider's answer: as for any claimed delivery, its lease ends
  and it is attempted again (the due entry, held back meanwhile, is restored by the reconcile
  pass at the next start).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from kefu_shared.contracts.notifier import NotificationFailureReason, NotificationRequested
from kefu_shared.documents import Change, Stored
from kefu_shared.mongo import Document
from kefu_shared.pii import redact_card_numbers
from kefu_shared.tracing import current_trace_carrier

from kefu_notifier.adapters.store import RECENT_SENDS_FIELD, delivery_to_state
from kefu_notifier.domain.catalogue import DEFAULT_CHANNEL_ORDER, ChannelKind, purpose_of
from kefu_notifier.domain.delivery import Delivery, DeliveryStatus
from kefu_notifier.domain.policies import Route, routes_for
from kefu_notifier.domain.ports import TemplateError
from kefu_notifier.handlers import (
    TRACE_FIELD,
    NotifierDeps,
    count_outcome,
    events_of,
    verdict_for,
)

log = logging.getLogger(__name__)

CONTACT_FIELD = "contact"
ADDRESS_FIELDS = ("email", "phone", "wechat_openid", "marketplace_im_id", "app_push_token")


async def accept_request(
    request: NotificationRequested,
    *,
    message_id: str,
    correlation_id: str,
    deps: NotifierDeps,
) -> Delivery | None:
    """Record the request as a delivery; when there is room, judge it first and send it at once.

    Returns the new delivery, or None if the idempotency key was seen before: whatever the
    envelope id, the same key is the same notification.
    """
    now = deps.clock()
    request = _without_card_numbers(request)
    at_once = deps.at_once
    if at_once is not None and at_once.reserve():
        started = False
        try:
            judged = await _judge_at_intake(request, message_id, correlation_id, deps, now)
            if judged is not None:
                delivery, route = judged
                if not await _record(delivery, message_id, deps, hold_due=route is not None):
                    return None
                if route is not None:
                    at_once.start(delivery, route)
                    started = True
                return delivery
        finally:
            if not started:
                at_once.cancel()
    return await _accept_for_dispatch(request, message_id, correlation_id, deps, now)


async def _judge_at_intake(
    request: NotificationRequested,
    message_id: str,
    correlation_id: str,
    deps: NotifierDeps,
    now: datetime,
) -> tuple[Delivery, Route | None] | None:
    """The delivery as the policies leave it, with the route if it is claimed for sending now,
    after one write to the customer (contact card and rate-limit slot). None if that write was
    made before for this idempotency key (a redelivered request)."""
    given = _given_addresses(request)
    judged: list[tuple[Delivery, Route | None]] = []

    def decide(current: Stored | None) -> Change | None:
        judged.clear()
        before: Document = current.state if current else {}
        state = {**_with_contact(before, given)}
        addressed = _addressed(request, given, before.get(CONTACT_FIELD) or {})
        delivery = _intake(addressed, message_id, correlation_id, deps, now)
        route = None
        if delivery.status is DeliveryStatus.PENDING:
            verdict = verdict_for(delivery, before, now, deps)
            delivery = delivery.judged(verdict, now, deps.send_lease)
            if verdict.recent_sends is not None:
                state[RECENT_SENDS_FIELD] = list(verdict.recent_sends)
                route = verdict.route
        judged.append((delivery, route))
        return Change(state) if state != before else None

    outcome = await deps.customers.mutate(
        request.customer_id, decide, message_id=request.idempotency_key
    )
    return None if outcome.duplicate else judged[0]


async def _accept_for_dispatch(
    request: NotificationRequested,
    message_id: str,
    correlation_id: str,
    deps: NotifierDeps,
    now: datetime,
) -> Delivery | None:
    """Record it pending, for the dispatcher's scan of the due times."""
    request = await _with_known_contact(request, deps)
    delivery = _intake(request, message_id, correlation_id, deps, now)
    if not await _record(delivery, message_id, deps):
        return None
    if delivery.status is DeliveryStatus.PENDING:
        deps.wake_dispatcher()
    return delivery


async def _record(
    delivery: Delivery, message_id: str, deps: NotifierDeps, *, hold_due: bool = False
) -> bool:
    """Insert the delivery unless its idempotency key is recorded already.

    ``hold_due``: it is sent at once, so no due entry is written unless the send leaves it due.
    """
    key = delivery.idempotency_key

    def decide(current: Stored | None) -> Change | None:
        if current is not None:
            return None
        # The dispatch loop may send later: keep the request's trace to continue it then.
        state = {**delivery_to_state(delivery), TRACE_FIELD: current_trace_carrier()}
        return Change(state, events_of(None, delivery, deps))

    # A request is normally seen once: insert first, read only if the key exists already.
    outcome = await deps.deliveries.mutate(
        key, decide, message_id=message_id, expect_new=True, hold_due=hold_due
    )
    if not outcome.changed:
        log.info("notification %s already recorded; not sent again", key)
        return False
    count_outcome(delivery, deps)
    return True


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


def _given_addresses(request: NotificationRequested) -> dict[str, str]:
    return {f: v for f in ADDRESS_FIELDS if (v := getattr(request.recipient, f))}


def _with_contact(state: Document, given: dict[str, str]) -> Document:
    """The customer's state with the request's addresses on its contact card (``state`` itself
    when the card holds them already)."""
    known = state.get(CONTACT_FIELD) or {}
    contact = {**known, **given}
    return state if contact == known else {**state, CONTACT_FIELD: contact}


def _addressed(
    request: NotificationRequested, given: dict[str, str], known: dict[str, str]
) -> NotificationRequested:
    """The notifier is where kefu knows how to reach a customer: a request without any address
    (e.g. a survey asked for from events that carry no personal data) is addressed from the
    contact card that earlier requests filled."""
    if given or not known:
        return request
    recipient = request.recipient.model_copy(update=known)
    return request.model_copy(update={"recipient": recipient})


async def _with_known_contact(
    request: NotificationRequested, deps: NotifierDeps
) -> NotificationRequested:
    """Addressed from the contact card, or the card updated from the request's addresses."""
    given = _given_addresses(request)
    if not given:
        stored = await deps.customers.load(request.customer_id)
        known = (stored.state.get(CONTACT_FIELD) if stored else None) or {}
        return _addressed(request, given, known)

    def remember(current: Stored | None) -> Change | None:
        state = current.state if current else {}
        updated = _with_contact(state, given)
        return None if updated is state else Change(updated)

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
