"""Order changes asked over HTTP: only after identity verification, never after shipping.

Two proofs of identity: a one-time code sent to the customer through the notifier (stored only
as a hash, valid for minutes, void after a few wrong tries), or the order's details (receiver's
name and phone) the caller must repeat. Every change, every refused change and every failed
verification is audited in the order (who, when, what, before/after) and failed verifications
are published (``order.identity_verification_failed``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from kefu_shared.contracts.orders import (
    ActorKind,
    ChangeField,
    DeliveryAddress,
    OrderIdentityVerificationFailed,
    OrderLine,
)

from kefu_orders.domain.attribution import Contact
from kefu_orders.domain.notes import EN
from kefu_orders.domain.order import (
    CHANGEABLE,
    AuditRecord,
    Decision,
    Invalid,
    Notice,
    Order,
    Rejected,
    Rules,
    Verification,
    changeable_view,
    classify_change,
    event_base,
    record_change,
)
from kefu_orders.domain.review import computed_total, missing_address_parts

ONE_TIME_CODE = "one_time_code"
ORDER_DETAILS = "order_details"
KEPT_VERIFICATIONS = 5


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    id: str | None


@dataclass(frozen=True)
class Proof:
    method: str  # one_time_code | order_details
    verification_id: str | None = None
    code: str | None = None
    receiver: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class LineChange:
    sku: str
    quantity: int
    name: str | None = None
    category: str | None = None
    unit_price_cents: int | None = None


@dataclass(frozen=True)
class ChangeRequest:
    address: DeliveryAddress | None = None
    lines: Sequence[LineChange] | None = None


def _who(order: Order, actor: Actor) -> Actor:
    # The shop's front end acts for the customer whose order it is.
    if actor.kind is ActorKind.CUSTOMER and actor.id is None:
        return Actor(ActorKind.CUSTOMER, order.customer_id)
    return actor


def code_hash(verification_id: str, code: str) -> str:
    return hashlib.sha256(f"{verification_id}:{code.strip()}".encode()).hexdigest()


def request_code(
    order: Order,
    *,
    verification_id: str,
    code: str,
    actor: Actor,
    rules: Rules,
    now: datetime,
) -> Decision:
    """A one-time code for the customer (through the notifier); only its hash is kept."""
    actor = _who(order, actor)
    if order.status not in CHANGEABLE:
        raise Rejected(f"status: order {order.id} is {order.status.value}; it cannot change")
    policy = rules.verification
    order.verifications = [
        *order.verifications[-(KEPT_VERIFICATIONS - 1) :],
        Verification(
            verification_id=verification_id,
            code_hash=code_hash(verification_id, code),
            expires_at=now + policy.code_valid,
            requested_at=now,
            requested_by=actor.id,
        ),
    ]
    order.audit.append(
        AuditRecord(
            at=now,
            action="verification_requested",
            actor_kind=actor.kind,
            actor_id=actor.id,
            detail=f"{ONE_TIME_CODE} {verification_id}",
        )
    )
    minutes = max(1, int(policy.code_valid.total_seconds() // 60))
    notice = Notice(
        f"orders:{order.id}:verification:{verification_id}",
        "verification_code",
        "verification_code",
        {"code": code, "valid_minutes": minutes},
    )
    return Decision(order, notices=[notice], outcome="code_sent")


def _updated_lines(order: Order, changes: Sequence[LineChange] | None) -> list[OrderLine]:
    if changes is None:
        return list(order.lines)
    existing = {line.sku: line for line in order.lines}
    out: list[OrderLine] = []
    seen: set[str] = set()
    for i, change in enumerate(changes):
        where = f"lines.{i}"
        if change.sku in seen:
            raise Invalid(f"{where}.sku", f"{change.sku} is listed twice")
        seen.add(change.sku)
        if change.quantity < 1:
            raise Invalid(f"{where}.quantity", "must be at least 1 (leave a line out to drop it)")
        current = existing.get(change.sku)
        if current is not None:
            if (
                change.unit_price_cents is not None
                and change.unit_price_cents != current.unit_price_cents
            ):
                raise Invalid(
                    f"{where}.unit_price_cents",
                    "prices are changed on the commerce platform, not through a change request",
                )
            out.append(current.model_copy(update={"quantity": change.quantity}))
            continue
        if not change.name or change.unit_price_cents is None:
            raise Invalid(
                f"{where}.unit_price_cents" if change.name else f"{where}.name",
                f"a new item {change.sku} needs its name and catalogue unit price",
            )
        out.append(
            OrderLine(
                sku=change.sku,
                name=change.name,
                category=change.category or "",
                quantity=change.quantity,
                unit_price_cents=change.unit_price_cents,
                catalogue_unit_price_cents=change.unit_price_cents,
            )
        )
    if not out:
        raise Invalid("lines", "an order needs at least one line")
    return out


def _digits(value: str | None) -> str:
    return re.sub(r"\D", "", value or "")


def _verify(
    order: Order, proof: Proof, rules: Rules, now: datetime
) -> tuple[str, int, bool] | None:
    """None if the proof holds; else (reason, failed attempts so far, locked)."""
    policy = rules.verification
    if proof.method == ONE_TIME_CODE:
        found = next(
            (v for v in order.verifications if v.verification_id == proof.verification_id), None
        )
        if found is None:
            return ("unknown_verification", 0, False)
        if found.failed_attempts >= policy.max_code_attempts:
            return ("locked", found.failed_attempts, True)
        if found.used:
            return ("code_already_used", found.failed_attempts, False)
        if now > found.expires_at:
            return ("expired", found.failed_attempts, False)
        expected = code_hash(found.verification_id, proof.code or "")
        if not hmac.compare_digest(found.code_hash, expected):
            found.failed_attempts += 1
            locked = found.failed_attempts >= policy.max_code_attempts
            return ("wrong_code", found.failed_attempts, locked)
        found.used = True
        return None
    if order.details_failures >= policy.max_details_failures:
        return ("locked", order.details_failures, True)
    same_receiver = (
        " ".join((proof.receiver or "").split()).casefold()
        == " ".join(order.address.receiver.split()).casefold()
    )
    same_phone = _digits(proof.phone)[-11:] == _digits(order.address.phone)[-11:]
    if same_receiver and same_phone and _digits(proof.phone):
        return None
    order.details_failures += 1
    locked = order.details_failures >= policy.max_details_failures
    return ("details_mismatch", order.details_failures, locked)


def describe(order: Order, fields: Sequence[ChangeField]) -> str:
    """The change in the customer's words, for the confirmation notice."""
    a = order.address
    items = ", ".join(f"{line.name} x {line.quantity}" for line in order.lines)
    english = order.language == EN
    parts: list[str] = []
    if ChangeField.ADDRESS in fields:
        where = f"{a.province}{a.city}{a.district}{a.street}, {a.receiver}"
        parts.append(f"Delivery address: {where}" if english else f"收货地址：{where}")
    if {ChangeField.ITEMS, ChangeField.QUANTITY} & set(fields):
        parts.append(f"Items: {items}" if english else f"商品：{items}")
    return "; ".join(parts)


def change_order(
    order: Order,
    *,
    change_id: str,
    request: ChangeRequest,
    proof: Proof,
    actor: Actor,
    rules: Rules,
    contacts: Sequence[Contact],
    now: datetime,
) -> Decision:
    """Apply a verified change. Outcomes: ``changed``; ``verification_failed`` (audited and
    published, nothing changed); ``refused`` (the order is past changing; audited). A request
    that is wrong in itself raises ``Invalid`` and leaves no trace."""
    actor = _who(order, actor)
    if order.status not in CHANGEABLE:
        order.audit.append(
            AuditRecord(
                at=now,
                action="change_refused",
                actor_kind=actor.kind,
                actor_id=actor.id,
                change_id=change_id,
                detail=f"order is {order.status.value}; changes are not accepted after shipping",
            )
        )
        return Decision(order, outcome="refused")
    lines = _updated_lines(order, request.lines)
    address = request.address or order.address
    address_changed = address != order.address
    if address_changed:
        missing = missing_address_parts(address)
        if missing:
            raise Invalid(f"address.{missing[0].split()[0]}", "the new address is incomplete")
    amounts = (order.discount_cents, order.shipping_fee_cents)
    fields, sold_more, price_cut = classify_change(
        order.lines, lines, amounts, amounts, address_changed
    )
    if not fields:
        raise Invalid("change", "nothing in it differs from the order")

    failure = _verify(order, proof, rules, now)
    if failure is not None:
        reason, attempts, locked = failure
        order.audit.append(
            AuditRecord(
                at=now,
                action="verification_failed",
                actor_kind=actor.kind,
                actor_id=actor.id,
                change_id=change_id,
                detail=f"{proof.method}: {reason}" + (" (locked)" if locked else ""),
            )
        )
        event = OrderIdentityVerificationFailed(
            **event_base(order, now),
            method=proof.method,
            reason=reason,
            actor_kind=actor.kind,
            actor_id=actor.id,
            failed_attempts=attempts,
            locked=locked,
        )
        return Decision(order, events=[event], outcome="verification_failed")

    before = changeable_view(order)
    order.lines = lines
    order.address = address
    order.total_cents = computed_total(lines, order.discount_cents, order.shipping_fee_cents)
    decision = record_change(
        order,
        change_id=change_id,
        at=now,
        fields=fields,
        sold_more=sold_more,
        price_cut=price_cut,
        actor_kind=actor.kind,
        actor_id=actor.id,
        approved_by=None,
        verified_by=proof.method,
        before=before,
        rules=rules,
        contacts=contacts,
        now=now,
        re_review_courier=address_changed,
    )
    decision.notices.append(
        Notice(
            f"orders:{order.id}:change:{change_id}",
            "order_change_confirmation",
            "order_change_confirmation",
            {"order_id": order.id, "change": describe(order, fields)},
        )
    )
    return decision
