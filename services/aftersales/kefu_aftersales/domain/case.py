"""The after-sales case aggregate and its rules.

Every command is a pure function ``(case, command, now) -> Decision``: the new state, the events
other services see and the notices the customer gets. The handlers store the state and put the
events and notices into the outbox in one write, so they happen together or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kefu_shared.contracts.aftersales import (
    AftersalesCaseClosed,
    AftersalesCaseOpened,
    AftersalesDecisionMade,
    AftersalesEvent,
    AftersalesExchangeShipped,
    AftersalesRefundIssued,
    AftersalesReturnParcelSent,
    AftersalesStateChanged,
    CaseContact,
    CaseKind,
    CaseLine,
    CaseOrigin,
    CaseState,
    NegativeReviewAnswered,
    NegativeReviewReceived,
    NegativeReviewReplyOverdue,
    RequestReason,
    ShippingPayer,
    Verdict,
)
from pydantic import BaseModel, Field

from kefu_aftersales.domain.flows import Flows
from kefu_aftersales.domain.orders import OrderLine
from kefu_aftersales.domain.policy import (
    PARCEL_KINDS,
    REFUND_KINDS,
    Policy,
    ReviewedLine,
    ReviewRequest,
)

COMPLETED_STATES = frozenset(
    {CaseState.REFUNDED, CaseState.EXCHANGED, CaseState.REPAIRED, CaseState.REJECTED}
)
"""States after which only closing is left; they close on their own after a while (policy)."""

NOTIFIED_STATES = frozenset(
    {
        CaseState.REQUESTED,
        CaseState.APPROVED,
        CaseState.REJECTED,
        CaseState.AWAITING_RETURN_PARCEL,
        CaseState.RECEIVED,
        CaseState.INSPECTED,
        CaseState.REFUNDED,
        CaseState.EXCHANGED,
        CaseState.REPAIRED,
        CaseState.CLOSED,
    }
)
"""States the customer is told about (the notifier's ``aftersales_<state>`` templates).
``under_review`` has none: the ``requested`` notice already says the review comes next."""

SYSTEM_TARGETS = {
    CaseState.REQUESTED: "cases start there",
    CaseState.UNDER_REVIEW: "complete the request (POST /cases/{id}/completion)",
    CaseState.APPROVED: "the policy or a supervisor decides (POST /cases/{id}/decision)",
    CaseState.AWAITING_REPLY: "reviews start there",
    CaseState.ANSWERED: "reply to the review (POST /cases/{id}/review-reply)",
}
"""Targets a plain transition may not name: another command reaches them."""


class DomainError(Exception):
    """A command that does not fit the case: 404 (``not_found``), 409 (state), 422 (``field``)."""

    def __init__(
        self,
        message: str,
        *,
        not_found: bool = False,
        field: str | None = None,
        reason: str = "invalid_transition",
    ) -> None:
        super().__init__(message)
        self.not_found = not_found
        self.field = field
        self.reason = reason


class Line(BaseModel):
    sku: str
    quantity: int
    category: str
    unit_price_cents: int

    def contract(self) -> CaseLine:
        return CaseLine(
            sku=self.sku,
            quantity=self.quantity,
            category=self.category,
            unit_price_cents=self.unit_price_cents,
        )


class HistoryEntry(BaseModel):
    """The audit trail: who moved the case, from where to where, and why."""

    at: datetime
    action: str
    from_state: CaseState | None = None
    to_state: CaseState
    actor_id: str | None = None
    reason: str = ""
    override: bool = False


class CaseDecision(BaseModel):
    verdict: Verdict
    rule: str
    rule_description: str
    decided_by: str
    supervisor_id: str | None = None
    reason: str = ""
    return_shipping_paid_by: ShippingPayer = ShippingPayer.NONE
    refund_amount_cents: int | None = None
    currency: str | None = None
    policy_version: str = ""
    decided_at: datetime


class Parcel(BaseModel):
    carrier: str
    tracking_number: str
    at: datetime


class Inspection(BaseModel):
    passed: bool
    result: str
    at: datetime


class Refund(BaseModel):
    amount_cents: int
    currency: str
    reference: str | None = None
    at: datetime


class Review(BaseModel):
    review_id: str
    marketplace: str
    rating: int
    text: str
    posted_at: datetime
    reply_due_at: datetime
    reply: str | None = None
    explanation: str | None = None
    answered_by: str | None = None
    answered_at: datetime | None = None
    overdue_at: datetime | None = None


class Case(BaseModel):
    id: str
    kind: CaseKind
    origin: CaseOrigin
    state: CaseState
    customer_id: str
    order_id: str | None = None
    order_reference: str | None = None
    lines: list[Line] = Field(default_factory=list)
    reason: RequestReason | None = None
    description: str = ""
    evidence: list[str] = Field(default_factory=list)
    item_opened: bool = False
    channel: str | None = None
    language: str = "zh-CN"
    contact: CaseContact = Field(default_factory=CaseContact)
    inquiry_id: str | None = None
    needs_completion: bool = False
    delivered_at: datetime | None = None
    currency: str | None = None
    decision: CaseDecision | None = None
    return_parcel: Parcel | None = None
    received_at: datetime | None = None
    inspection: Inspection | None = None
    refund: Refund | None = None
    shipment: Parcel | None = None
    review: Review | None = None
    resolution: str | None = None
    note: str = ""
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    auto_close_at: datetime | None = None
    next_timer_at: datetime | None = None
    """The earliest of the case's timers (reply deadline, auto-close): what the scanner queries."""
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.state is not CaseState.CLOSED

    @property
    def value_cents(self) -> int:
        return sum(line.unit_price_cents * line.quantity for line in self.lines)

    def to_state(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Case:
        return cls.model_validate(state)


@dataclass(frozen=True)
class Notice:
    """A progress notice for the customer; the handler makes it a notification request."""

    template: str
    parameters: dict[str, str]
    idempotency_key: str


@dataclass
class Decision:
    case: Case
    events: list[AftersalesEvent] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)


@dataclass(frozen=True)
class RequestDetails:
    """What a complete after-sales request says."""

    kind: CaseKind
    reason: RequestReason
    lines: Sequence[OrderLine]
    description: str = ""
    evidence: Sequence[str] = ()
    item_opened: bool = False


@dataclass(frozen=True)
class Customer:
    """Who asked and how to reach them."""

    customer_id: str
    channel: str | None = None
    language: str = "zh-CN"
    contact: CaseContact = field(default_factory=CaseContact)


@dataclass(frozen=True)
class StepDetails:
    """What an agent records with a step; which fields a step needs depends on the target."""

    note: str = ""
    carrier: str | None = None
    tracking_number: str | None = None
    inspection_passed: bool | None = None
    inspection_result: str | None = None
    amount_cents: int | None = None
    refund_reference: str | None = None


def case_id_for(source: str) -> str:
    """Deterministic, so a redelivered or retried intake opens the same case, never a second."""
    return "AS-" + hashlib.sha256(source.encode()).hexdigest()[:16].upper()


def format_cents(cents: int) -> str:
    """``19900`` -> ``"199.00"``: how the customer reads an amount."""
    return f"{cents // 100}.{cents % 100:02d}"


def notice_language(language: str | None) -> str:
    """The notifier's languages: Chinese by default, English for any English tag."""
    return "en" if language and language.lower().startswith("en") else "zh-CN"


# -- helpers ------------------------------------------------------------------------------------


def _base(case: Case, now: datetime) -> dict[str, Any]:
    return {
        "case_id": case.id,
        "kind": case.kind,
        "customer_id": case.customer_id,
        "order_id": case.order_id,
        "state": case.state,
        "occurred_at": now,
    }


def _notice(case: Case, state: CaseState, **extra: str) -> list[Notice]:
    if state not in NOTIFIED_STATES or case.kind is CaseKind.NEGATIVE_REVIEW or not case.order_id:
        return []
    # The history length makes the key unique per step even if a state repeats (an override).
    key = f"aftersales:{case.id}:{state.value}:{len(case.history)}"
    params = {"case_id": case.id, "order_id": case.order_id, **extra}
    return [Notice(f"aftersales_{state.value}", params, key)]


def _timers(case: Case) -> Case:
    due = [
        t
        for t in (
            case.auto_close_at if case.state in COMPLETED_STATES else None,
            case.review.reply_due_at
            if case.review and case.state is CaseState.AWAITING_REPLY and not case.review.overdue_at
            else None,
        )
        if t is not None
    ]
    return case.model_copy(update={"next_timer_at": min(due) if due else None})


def _move(
    decision: Decision,
    target: CaseState,
    now: datetime,
    *,
    actor_id: str | None,
    action: str,
    reason: str = "",
    override: bool = False,
    policy: Policy | None = None,
    notice: dict[str, str] | None = None,
    event_extra: dict[str, Any] | None = None,
    update: dict[str, Any] | None = None,
) -> None:
    """One state change: history, ``state_changed``, the customer's notice, the timers."""
    before = decision.case
    entry = HistoryEntry(
        at=now,
        action=action,
        from_state=before.state,
        to_state=target,
        actor_id=actor_id,
        reason=reason,
        override=override,
    )
    changes: dict[str, Any] = {
        **(update or {}),
        "state": target,
        "updated_at": now,
        "history": [*before.history, entry],
    }
    if target in COMPLETED_STATES and policy is not None and policy.auto_close_after:
        changes["auto_close_at"] = now + policy.auto_close_after
    after = _timers(before.model_copy(update=changes))
    decision.case = after
    decision.events.append(
        AftersalesStateChanged(
            **_base(after, now),
            from_state=before.state,
            actor_id=actor_id,
            override=override,
            reason=reason,
            **(event_extra or {}),
        )
    )
    decision.notices.extend(_notice(before, target, **(notice or {})))


# -- intake -------------------------------------------------------------------------------------


def open_request(
    case_id: str,
    customer: Customer,
    order_id: str,
    details: RequestDetails,
    *,
    delivered_at: datetime,
    currency: str,
    policy: Policy,
    now: datetime,
) -> Decision:
    """A complete request: opened, told to the customer, reviewed by the policy at once."""
    case = Case(
        id=case_id,
        kind=details.kind,
        origin=CaseOrigin.HTTP,
        state=CaseState.REQUESTED,
        customer_id=customer.customer_id,
        order_id=order_id,
        opened_at=now,
        updated_at=now,
        channel=customer.channel,
        language=customer.language,
        contact=customer.contact,
        history=[HistoryEntry(at=now, action="opened", to_state=CaseState.REQUESTED)],
    )
    case = _with_details(case, details, delivered_at, currency)
    decision = Decision(case, [_opened(case, now)], [])
    decision.notices.extend(_notice(case, CaseState.REQUESTED))
    _review(decision, policy, now, actor_id=None)
    return decision


def _with_details(
    case: Case, details: RequestDetails, delivered_at: datetime, currency: str
) -> Case:
    return case.model_copy(
        update={
            "kind": details.kind,
            "reason": details.reason,
            "lines": [
                Line(
                    sku=ln.sku,
                    quantity=ln.quantity,
                    category=ln.category,
                    unit_price_cents=ln.unit_price_cents,
                )
                for ln in details.lines
            ],
            "description": details.description,
            "evidence": list(details.evidence),
            "item_opened": details.item_opened,
            "delivered_at": delivered_at,
            "currency": currency,
            "needs_completion": False,
        }
    )


def _opened(case: Case, now: datetime) -> AftersalesCaseOpened:
    return AftersalesCaseOpened(
        **_base(case, now),
        origin=case.origin,
        reason=case.reason,
        lines=[line.contract() for line in case.lines],
        description=case.description,
        evidence_count=len(case.evidence),
        needs_completion=case.needs_completion,
        channel=case.channel,
        language=case.language,
        inquiry_id=case.inquiry_id,
        review_id=case.review.review_id if case.review else None,
    )


def open_from_inquiry(
    case_id: str,
    customer: Customer,
    *,
    inquiry_id: str,
    description: str,
    order_id: str | None,
    order_reference: str | None,
    kind: CaseKind,
    reason: RequestReason | None,
    now: datetime,
) -> Decision:
    """An inquiry classified as after-sales: a ``requested`` case with what the text tells
    (kind, reason, the order if the reference is a known order). An agent completes it with the
    lines; only then is it reviewed and the customer told (the inquiry was acknowledged)."""
    case = Case(
        id=case_id,
        kind=kind,
        origin=CaseOrigin.INQUIRY,
        state=CaseState.REQUESTED,
        customer_id=customer.customer_id,
        order_id=order_id,
        order_reference=order_reference,
        reason=reason,
        description=description,
        channel=customer.channel,
        language=customer.language,
        contact=customer.contact,
        inquiry_id=inquiry_id,
        needs_completion=True,
        opened_at=now,
        updated_at=now,
        history=[HistoryEntry(at=now, action="opened from inquiry", to_state=CaseState.REQUESTED)],
    )
    return Decision(case, [_opened(case, now)], [])


def complete(
    case: Case,
    order_id: str,
    details: RequestDetails,
    *,
    actor_id: str,
    delivered_at: datetime,
    currency: str,
    contact: CaseContact | None,
    policy: Policy,
    now: datetime,
) -> Decision:
    """An agent adds what an inquiry did not say (order, lines, kind, reason); then the policy
    reviews it like any request."""
    if not case.needs_completion or case.state is not CaseState.REQUESTED:
        raise DomainError(
            f"case {case.id} is {case.state.value}: only an incomplete request can be completed"
        )
    updated = _with_details(case, details, delivered_at, currency).model_copy(
        update={"order_id": order_id, "contact": contact or case.contact}
    )
    decision = Decision(updated)
    decision.notices.extend(_notice(updated, CaseState.REQUESTED))
    _review(decision, policy, now, actor_id=actor_id)
    return decision


def _review(decision: Decision, policy: Policy, now: datetime, *, actor_id: str | None) -> None:
    case = decision.case
    _move(decision, CaseState.UNDER_REVIEW, now, actor_id=actor_id, action="review started")
    if case.delivered_at is None or case.reason is None:
        raise DomainError(f"case {case.id}: review needs the delivery date and a reason")
    request = ReviewRequest(
        kind=case.kind,
        reason=case.reason,
        lines=[
            ReviewedLine(ln.sku, ln.quantity, ln.category, ln.unit_price_cents) for ln in case.lines
        ],
        item_opened=case.item_opened,
        delivered_at=case.delivered_at,
    )
    verdict = policy.review(request, now)
    rule = verdict.rule
    reason = rule.message(case.language)
    record = CaseDecision(
        verdict=verdict.verdict,
        rule=rule.id,
        rule_description=rule.description,
        decided_by="policy",
        reason=reason,
        return_shipping_paid_by=verdict.return_shipping_paid_by,
        refund_amount_cents=verdict.refund_amount_cents,
        currency=case.currency,
        policy_version=policy.version,
        decided_at=now,
    )
    _decide(decision, record, policy, now, actor_id=actor_id)


def _decide(
    decision: Decision,
    record: CaseDecision,
    policy: Policy,
    now: datetime,
    *,
    actor_id: str | None,
    override: bool = False,
) -> None:
    case = decision.case.model_copy(update={"decision": record, "updated_at": now})
    decision.case = case
    decision.events.append(
        AftersalesDecisionMade(
            **_base(case, now),
            verdict=record.verdict,
            rule=record.rule,
            rule_description=record.rule_description,
            decided_by=record.decided_by,
            supervisor_id=record.supervisor_id,
            reason=record.reason,
            return_shipping_paid_by=record.return_shipping_paid_by,
            refund_amount_cents=record.refund_amount_cents,
            currency=record.currency,
            policy_version=record.policy_version,
        )
    )
    action = f"decided by {record.decided_by} ({record.rule})"
    if record.verdict is Verdict.REJECTED:
        _move(
            decision,
            CaseState.REJECTED,
            now,
            actor_id=actor_id,
            action=action,
            reason=record.reason,
            override=override,
            policy=policy,
            notice={"reason": record.reason},
        )
    elif record.verdict is Verdict.APPROVED:
        _move(
            decision,
            CaseState.APPROVED,
            now,
            actor_id=actor_id,
            action=action,
            reason=record.reason if record.decided_by != "policy" else "",
            override=override,
            policy=policy,
        )
        if case.kind in PARCEL_KINDS:
            _await_parcel(decision, policy, now, actor_id=None)


def _await_parcel(
    decision: Decision, policy: Policy, now: datetime, *, actor_id: str | None
) -> None:
    _move(
        decision,
        CaseState.AWAITING_RETURN_PARCEL,
        now,
        actor_id=actor_id,
        action="waiting for the return parcel",
        notice={"return_address": policy.return_address},
    )


# -- decisions by a supervisor ------------------------------------------------------------------

SUPERVISOR_DECIDABLE = frozenset(
    {
        CaseState.UNDER_REVIEW,
        CaseState.APPROVED,
        CaseState.AWAITING_RETURN_PARCEL,
        CaseState.REJECTED,
    }
)


def supervisor_decide(
    case: Case,
    verdict: Verdict,
    *,
    supervisor_id: str,
    reason: str,
    policy: Policy,
    now: datetime,
) -> Decision:
    """Approve or reject a request waiting for a supervisor, or overrule the policy's verdict
    (before the parcel arrives or the case closes). Audited: the rule names the supervisor's
    action, the reason is required and kept in the history and the event."""
    if verdict is Verdict.NEEDS_SUPERVISOR:
        raise DomainError("a supervisor decides approved or rejected", field="verdict")
    if not reason.strip():
        raise DomainError("a supervisor's decision needs a reason", field="reason")
    if case.kind is CaseKind.NEGATIVE_REVIEW or case.needs_completion:
        raise DomainError(f"case {case.id} has no request to decide on")
    if case.state not in SUPERVISOR_DECIDABLE:
        raise DomainError(
            f"case {case.id} is {case.state.value}: a decision can change only before the return "
            "parcel arrives (use an override transition later)"
        )
    current = case.state
    wanted = CaseState.APPROVED if verdict is Verdict.APPROVED else CaseState.REJECTED
    already = (current is CaseState.REJECTED and wanted is CaseState.REJECTED) or (
        current in (CaseState.APPROVED, CaseState.AWAITING_RETURN_PARCEL)
        and wanted is CaseState.APPROVED
    )
    if already:
        raise DomainError(f"case {case.id} is already {current.value}")
    pending = case.decision is not None and case.decision.verdict is Verdict.NEEDS_SUPERVISOR
    rule = (
        "supervisor_approval"
        if pending and current is CaseState.UNDER_REVIEW
        else ("supervisor_override")
    )
    shipping = ShippingPayer.NONE
    if case.kind in PARCEL_KINDS and case.reason is not None:
        shipping = policy.shipping_paid_by.get(case.reason, policy.default_shipping_payer)
    record = CaseDecision(
        verdict=verdict,
        rule=rule,
        rule_description="Decided by a supervisor"
        + (
            f" (the policy said {case.decision.verdict.value}: {case.decision.rule})"
            if case.decision
            else ""
        ),
        decided_by="supervisor",
        supervisor_id=supervisor_id,
        reason=reason,
        return_shipping_paid_by=shipping,
        refund_amount_cents=case.value_cents if case.kind in REFUND_KINDS else None,
        currency=case.currency,
        policy_version=policy.version,
        decided_at=now,
    )
    decision = Decision(case)
    _decide(
        decision,
        record,
        policy,
        now,
        actor_id=supervisor_id,
        override=rule == "supervisor_override",
    )
    return decision


# -- the parcel, inspection, refund, exchange, repair, close --------------------------------------


def record_return_parcel(
    case: Case, carrier: str, tracking_number: str, *, actor_id: str | None, now: datetime
) -> Decision:
    """The customer sent the item back; the case waits for it with the tracking number."""
    if case.state is not CaseState.AWAITING_RETURN_PARCEL:
        raise DomainError(f"case {case.id} is {case.state.value}, not awaiting a return parcel")
    parcel = Parcel(carrier=carrier, tracking_number=tracking_number, at=now)
    updated = case.model_copy(update={"return_parcel": parcel, "updated_at": now})
    event = AftersalesReturnParcelSent(
        **_base(updated, now), carrier=carrier, tracking_number=tracking_number, actor_id=actor_id
    )
    return Decision(updated, [event], [])


def transition(
    case: Case,
    target: CaseState,
    details: StepDetails,
    *,
    actor_id: str,
    flows: Flows,
    policy: Policy,
    now: datetime,
    override_reason: str | None = None,
) -> Decision:
    """One step of the state machine. Refused (409) unless the flow of the case's kind allows it
    and its preconditions hold; a supervisor's override (``override_reason``) skips both, is
    audited, and still needs the step's own data (e.g. an amount to refund)."""
    override = override_reason is not None
    if case.state is CaseState.CLOSED:
        raise DomainError(f"case {case.id} is closed; closed cases are final")
    if target is case.state:
        raise DomainError(f"case {case.id} is already {target.value}")
    if override:
        if not (override_reason or "").strip():
            raise DomainError("an override needs a reason", field="override.reason")
    else:
        if target in SYSTEM_TARGETS:
            raise DomainError(
                f"case {case.id}: {target.value} is not an agent's step ({SYSTEM_TARGETS[target]})"
            )
        if not flows.allows(case.kind, case.state, target):
            allowed = sorted(s.value for s in flows.next_states(case.kind, case.state))
            raise DomainError(
                f"case {case.id} ({case.kind.value}) cannot go from {case.state.value} to "
                f"{target.value}; allowed next: {', '.join(allowed) or 'none'}"
            )
        if target in (CaseState.REFUNDED, CaseState.EXCHANGED, CaseState.REPAIRED) and (
            case.kind in PARCEL_KINDS and not (case.inspection and case.inspection.passed)
        ):
            raise DomainError(
                f"case {case.id}: the returned item did not pass inspection; reject the case or "
                "ask a supervisor to override"
            )
    reason = override_reason or details.note
    decision = Decision(case)
    common: dict[str, Any] = {"actor_id": actor_id, "override": override, "reason": reason}
    if target is CaseState.AWAITING_RETURN_PARCEL:
        _move(
            decision,
            target,
            now,
            action="waiting for the return parcel",
            notice={"return_address": policy.return_address},
            **common,
        )
    elif target is CaseState.RECEIVED:
        _move(
            decision,
            target,
            now,
            action="return parcel received",
            event_extra=_parcel_extra(case.return_parcel),
            update={"received_at": now},
            **common,
        )
    elif target is CaseState.INSPECTED:
        _inspect(decision, details, now, common)
    elif target is CaseState.REFUNDED:
        _refund(decision, details, policy, now, common)
    elif target in (CaseState.EXCHANGED, CaseState.REPAIRED):
        _ship_back(decision, target, details, policy, now, common)
    elif target is CaseState.REJECTED:
        text = _required(details.note, "note", "say why the case is rejected")
        _move(
            decision,
            target,
            now,
            action="rejected",
            notice={"reason": text},
            policy=policy,
            **{**common, "reason": override_reason or text},
        )
    elif target is CaseState.CLOSED:
        _close(decision, now, details.note, common)
    else:
        _move(decision, target, now, action=f"moved to {target.value}", policy=policy, **common)
    return decision


def _required(value: str | None, name: str, why: str) -> str:
    if value is None or not str(value).strip():
        raise DomainError(f"{name}: required to {why}", field=name)
    return str(value).strip()


def _parcel_extra(parcel: Parcel | None) -> dict[str, Any]:
    if parcel is None:
        return {}
    return {"carrier": parcel.carrier, "tracking_number": parcel.tracking_number}


def _inspect(
    decision: Decision, details: StepDetails, now: datetime, common: dict[str, Any]
) -> None:
    if details.inspection_passed is None:
        raise DomainError(
            "inspection_passed: required for an inspection", field="inspection_passed"
        )
    result = _required(details.inspection_result, "inspection_result", "record the inspection")
    inspection = Inspection(passed=details.inspection_passed, result=result, at=now)
    _move(
        decision,
        CaseState.INSPECTED,
        now,
        action="inspected",
        notice={"result": result},
        event_extra={"inspection_passed": inspection.passed, "inspection_result": result},
        update={"inspection": inspection},
        **common,
    )


def _refund(
    decision: Decision,
    details: StepDetails,
    policy: Policy,
    now: datetime,
    common: dict[str, Any],
) -> None:
    case = decision.case
    if case.refund is not None:
        raise DomainError(f"case {case.id} was refunded already")
    approved = case.decision.refund_amount_cents if case.decision else None
    ceiling = approved if approved is not None else case.value_cents
    amount = details.amount_cents if details.amount_cents is not None else ceiling
    if amount <= 0:
        raise DomainError("amount_cents: must be above zero", field="amount_cents")
    if amount > ceiling and not common["override"]:
        raise DomainError(
            f"amount_cents: {amount} is above the approved {ceiling} ({case.currency}); a "
            "supervisor can override",
            field="amount_cents",
        )
    currency = case.currency or policy.currency
    refund = Refund(
        amount_cents=amount, currency=currency, reference=details.refund_reference, at=now
    )
    _move(
        decision,
        CaseState.REFUNDED,
        now,
        action="refunded",
        notice={"amount": format_cents(amount), "currency": currency},
        update={"refund": refund},
        policy=policy,
        **common,
    )
    decision.events.append(
        AftersalesRefundIssued(
            **_base(decision.case, now),
            amount_cents=amount,
            currency=currency,
            refund_reference=details.refund_reference,
            actor_id=common["actor_id"],
            lines=[line.contract() for line in case.lines],
        )
    )


def _ship_back(
    decision: Decision,
    target: CaseState,
    details: StepDetails,
    policy: Policy,
    now: datetime,
    common: dict[str, Any],
) -> None:
    exchange = target is CaseState.EXCHANGED
    shipment = None
    if exchange or details.carrier or details.tracking_number:
        carrier = _required(details.carrier, "carrier", "tell the customer how it is shipped")
        tracking = _required(
            details.tracking_number, "tracking_number", "let the customer follow it"
        )
        shipment = Parcel(carrier=carrier, tracking_number=tracking, at=now)
    notice = (
        {"carrier": shipment.carrier, "tracking_number": shipment.tracking_number}
        if (exchange and shipment)
        else {}
    )
    _move(
        decision,
        target,
        now,
        action="replacement shipped" if exchange else "repaired",
        notice=notice,
        event_extra=_parcel_extra(shipment),
        update={"shipment": shipment},
        policy=policy,
        **common,
    )
    if shipment is not None:
        decision.events.append(
            AftersalesExchangeShipped(
                **_base(decision.case, now),
                carrier=shipment.carrier,
                tracking_number=shipment.tracking_number,
                lines=[line.contract() for line in decision.case.lines],
                actor_id=common["actor_id"],
            )
        )


RESOLUTION_OF = {
    CaseState.REFUNDED: "refunded",
    CaseState.EXCHANGED: "exchanged",
    CaseState.REPAIRED: "repaired",
    CaseState.REJECTED: "rejected",
    CaseState.ANSWERED: "answered",
}


def _close(decision: Decision, now: datetime, note: str, common: dict[str, Any]) -> None:
    before = decision.case
    resolution = RESOLUTION_OF.get(before.state, "withdrawn")
    if before.kind is CaseKind.QUALITY_COMPLAINT and before.state is CaseState.APPROVED:
        resolution = "resolved"  # handled without money: explained or fixed otherwise
    _move(
        decision,
        CaseState.CLOSED,
        now,
        action=f"closed ({resolution})",
        update={
            "resolution": resolution,
            "note": note,
            "closed_at": now,
            "auto_close_at": None,
        },
        **common,
    )
    case = decision.case
    decision.events.append(
        AftersalesCaseClosed(
            **_base(case, now),
            resolution=resolution,
            note=note,
            actor_id=common["actor_id"],
            channel=case.channel,
            language=case.language,
            contact=case.contact,
            opened_at=case.opened_at,
            closed_at=now,
            resolution_seconds=(now - case.opened_at).total_seconds(),
            refunded_amount_cents=case.refund.amount_cents if case.refund else None,
            currency=case.refund.currency if case.refund else None,
        )
    )


# -- negative reviews ---------------------------------------------------------------------------


def open_negative_review(
    case_id: str,
    *,
    review_id: str,
    marketplace: str,
    order_id: str,
    customer_id: str,
    rating: int,
    text: str,
    posted_at: datetime,
    language: str,
    policy: Policy,
    now: datetime,
) -> Decision:
    """A 1-2 star review: a case to reply to by the deadline (counted from the posting: that is
    the marketplace's clock) and to resolve."""
    review = Review(
        review_id=review_id,
        marketplace=marketplace,
        rating=rating,
        text=text,
        posted_at=posted_at,
        reply_due_at=posted_at + policy.negative_review.reply_within,
    )
    case = _timers(
        Case(
            id=case_id,
            kind=CaseKind.NEGATIVE_REVIEW,
            origin=CaseOrigin.MARKETPLACE_REVIEW,
            state=CaseState.AWAITING_REPLY,
            customer_id=customer_id,
            order_id=order_id,
            channel="marketplace",
            language=language,
            review=review,
            description=text,
            opened_at=now,
            updated_at=now,
            history=[
                HistoryEntry(at=now, action="negative review", to_state=CaseState.AWAITING_REPLY)
            ],
        )
    )
    received = NegativeReviewReceived(
        **_base(case, now),
        review_id=review_id,
        marketplace=marketplace,
        rating=rating,
        text=text,
        posted_at=posted_at,
        reply_due_at=review.reply_due_at,
    )
    return Decision(case, [_opened(case, now), received], [])


def answer_review(
    case: Case, *, agent_id: str, reply: str, explanation: str, now: datetime
) -> Decision:
    """Record the agent's public reply and the explanation of the cause."""
    review = case.review
    if case.kind is not CaseKind.NEGATIVE_REVIEW or review is None:
        raise DomainError(f"case {case.id} is not a negative review")
    if case.state is not CaseState.AWAITING_REPLY:
        raise DomainError(f"case {case.id} is {case.state.value}: the review was answered already")
    reply = _required(reply, "reply", "answer the review")
    explanation = _required(explanation, "explanation", "record the cause")
    answered = review.model_copy(
        update={
            "reply": reply,
            "explanation": explanation,
            "answered_by": agent_id,
            "answered_at": now,
        }
    )
    decision = Decision(case)
    _move(
        decision,
        CaseState.ANSWERED,
        now,
        actor_id=agent_id,
        action="review answered",
        update={"review": answered},
    )
    decision.events.append(
        NegativeReviewAnswered(
            **_base(decision.case, now),
            review_id=review.review_id,
            marketplace=review.marketplace,
            agent_id=agent_id,
            reply=reply,
            explanation=explanation,
            answered_at=now,
            reply_due_at=review.reply_due_at,
            within_deadline=now <= review.reply_due_at,
            reply_seconds=max(0.0, (now - review.posted_at).total_seconds()),
        )
    )
    return decision


# -- timers -------------------------------------------------------------------------------------


def fire_timers(case: Case, now: datetime) -> Decision:
    """Whatever is due: the reply deadline of a review (once), the auto-close of a finished case.
    Flags in the document make each fire once, also after a restart (late rather than never)."""
    decision = Decision(case)
    review = case.review
    if (
        review is not None
        and case.state is CaseState.AWAITING_REPLY
        and review.overdue_at is None
        and review.reply_due_at <= now
    ):
        marked = case.model_copy(
            update={"review": review.model_copy(update={"overdue_at": now}), "updated_at": now}
        )
        decision.case = _timers(marked)
        decision.events.append(
            NegativeReviewReplyOverdue(
                **_base(decision.case, now),
                review_id=review.review_id,
                marketplace=review.marketplace,
                reply_due_at=review.reply_due_at,
            )
        )
    current = decision.case
    if (
        current.state in COMPLETED_STATES
        and current.auto_close_at is not None
        and current.auto_close_at <= now
    ):
        _close(
            decision,
            now,
            "closed automatically",
            {"actor_id": None, "override": False, "reason": ""},
        )
    if not decision.events:
        decision.case = _timers(decision.case)
    return decision
