"""Order review (handbook 二、订单审核): goods, quantities, prices and amounts against the shop's
records, a complete delivery address, a courier that serves it.

Pure checks over the order's lines and amounts; the aggregate turns the result into state, an
``order.reviewed`` event and the order note.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kefu_shared.contracts.orders import (
    DeliveryAddress,
    OrderLine,
    ReviewOutcome,
    ReviewReason,
    ReviewReasonCode,
)

REQUIRED_ADDRESS_PARTS = ("province", "city", "district", "street", "receiver", "phone")
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{5,19}$")


def computed_total(lines: Sequence[OrderLine], discount_cents: int, shipping_fee_cents: int) -> int:
    return sum(line.amount_cents for line in lines) - discount_cents + shipping_fee_cents


def missing_address_parts(address: DeliveryAddress) -> list[str]:
    missing = [part for part in REQUIRED_ADDRESS_PARTS if not getattr(address, part).strip()]
    if "phone" not in missing and not _PHONE.match(address.phone.strip()):
        missing.append("phone (not a phone number)")
    return missing


@dataclass(frozen=True)
class ReviewResult:
    outcome: ReviewOutcome
    reasons: tuple[ReviewReason, ...]
    computed_total_cents: int


def review(
    lines: Sequence[OrderLine],
    *,
    discount_cents: int,
    shipping_fee_cents: int,
    total_cents: int,
    address: DeliveryAddress,
    price_exception_approved_by: str | None,
    no_courier_coverage: bool,
) -> ReviewResult:
    reasons: list[ReviewReason] = []
    expected = computed_total(lines, discount_cents, shipping_fee_cents)
    if expected != total_cents:
        reasons.append(
            ReviewReason(
                code=ReviewReasonCode.TOTAL_MISMATCH,
                detail=f"lines {sum(li.amount_cents for li in lines)} - discount {discount_cents}"
                f" + shipping {shipping_fee_cents} = {expected}, but the total is {total_cents}",
            )
        )
    for line in lines:
        if line.unit_price_cents == line.catalogue_unit_price_cents:
            continue
        if line.unit_price_cents < line.catalogue_unit_price_cents and price_exception_approved_by:
            continue  # a price cut a supervisor approved is the shop's decision, not an error
        reasons.append(
            ReviewReason(
                code=ReviewReasonCode.PRICE_DIFFERS_FROM_CATALOGUE,
                detail=f"{line.sku}: charged {line.unit_price_cents}, catalogue "
                f"{line.catalogue_unit_price_cents}",
                sku=line.sku,
            )
        )
    missing = missing_address_parts(address)
    if missing:
        reasons.append(
            ReviewReason(
                code=ReviewReasonCode.ADDRESS_INCOMPLETE, detail="missing " + ", ".join(missing)
            )
        )
    if no_courier_coverage:
        reasons.append(
            ReviewReason(
                code=ReviewReasonCode.NO_COURIER_COVERAGE,
                detail=f"no partner courier serves {address.province} {address.city} "
                f"{address.district}".strip(),
            )
        )
    outcome = ReviewOutcome.NEEDS_ATTENTION if reasons else ReviewOutcome.CONFIRMED
    return ReviewResult(outcome, tuple(reasons), expected)
