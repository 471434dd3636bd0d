"""The shop's after-sales policy, as data: ordered rules, the first that matches decides.

A rule names the requests it applies to (kinds, reasons, product categories, whether the item
was opened, how long since delivery, how much money is at stake) and its verdict: approved,
rejected or needs_supervisor. The last rule should match everything (the default). Who pays the
return shipping is a table by reason. The policy file is ``data/policy.json``; a shop replaces it
with ``KEFU_AFTERSALES_POLICY_FILE`` without touching code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from kefu_shared.contracts.aftersales import CaseKind, RequestReason, ShippingPayer, Verdict

PARCEL_KINDS = frozenset({CaseKind.RETURN, CaseKind.EXCHANGE, CaseKind.REPAIR})
"""Kinds where the customer sends the item back."""

REFUND_KINDS = frozenset({CaseKind.RETURN, CaseKind.REFUND_ONLY, CaseKind.QUALITY_COMPLAINT})
"""Kinds that may end with money back."""


class PolicyError(ValueError):
    """The policy file does not describe a usable policy."""


@dataclass(frozen=True)
class ReviewedLine:
    sku: str
    quantity: int
    category: str
    unit_price_cents: int


@dataclass(frozen=True)
class ReviewRequest:
    """What the policy looks at."""

    kind: CaseKind
    reason: RequestReason
    lines: Sequence[ReviewedLine]
    item_opened: bool
    delivered_at: datetime

    @property
    def value_cents(self) -> int:
        """The money at stake: the lines' price times quantity."""
        return sum(line.unit_price_cents * line.quantity for line in self.lines)


@dataclass(frozen=True)
class Rule:
    id: str
    verdict: Verdict
    description: str
    customer_message: Mapping[str, str] = field(default_factory=dict)
    kinds: frozenset[CaseKind] | None = None
    reasons: frozenset[RequestReason] | None = None
    categories: frozenset[str] | None = None
    categories_not: frozenset[str] | None = None
    item_opened: bool | None = None
    days_since_delivery_over: float | None = None
    amount_over_cents: int | None = None

    def matches(self, request: ReviewRequest, now: datetime) -> bool:
        line_categories = {line.category for line in request.lines}
        checks = (
            self.kinds is None or request.kind in self.kinds,
            self.reasons is None or request.reason in self.reasons,
            self.categories is None or bool(line_categories & self.categories),
            self.categories_not is None or bool(line_categories - self.categories_not),
            self.item_opened is None or request.item_opened == self.item_opened,
            self.days_since_delivery_over is None
            or now - request.delivered_at > timedelta(days=self.days_since_delivery_over),
            self.amount_over_cents is None or request.value_cents > self.amount_over_cents,
        )
        return all(checks)

    def message(self, language: str) -> str:
        """The reason in the customer's language (falls back to the description)."""
        return self.customer_message.get(language) or self.description


@dataclass(frozen=True)
class PolicyDecision:
    verdict: Verdict
    rule: Rule
    return_shipping_paid_by: ShippingPayer
    refund_amount_cents: int | None
    value_cents: int


@dataclass(frozen=True)
class NegativeReviewPolicy:
    max_rating: int = 2
    reply_within: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class Policy:
    version: str
    currency: str
    rules: tuple[Rule, ...]
    shipping_paid_by: Mapping[RequestReason, ShippingPayer]
    default_shipping_payer: ShippingPayer
    return_address: str
    negative_review: NegativeReviewPolicy
    auto_close_after: timedelta | None

    def review(self, request: ReviewRequest, now: datetime) -> PolicyDecision:
        for rule in self.rules:
            if rule.matches(request, now):
                return PolicyDecision(
                    verdict=rule.verdict,
                    rule=rule,
                    return_shipping_paid_by=self.shipping_payer(request),
                    refund_amount_cents=request.value_cents
                    if request.kind in REFUND_KINDS
                    else None,
                    value_cents=request.value_cents,
                )
        raise PolicyError("no rule matched: the policy needs a default rule at the end")

    def shipping_payer(self, request: ReviewRequest) -> ShippingPayer:
        if request.kind not in PARCEL_KINDS:
            return ShippingPayer.NONE
        return self.shipping_paid_by.get(request.reason, self.default_shipping_payer)

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Policy:
        try:
            return _parse(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"invalid after-sales policy: {exc!r}") from exc


def _cents(amount: Any) -> int:
    """Policy amounts are written in currency units (``2000``); money is cents everywhere else."""
    return int(Decimal(str(amount)) * 100)


def _set(values: Any, kind: type[Any]) -> frozenset[Any] | None:
    return None if values is None else frozenset(kind(v) for v in values)


def _parse(data: Mapping[str, Any]) -> Policy:
    rules = []
    seen: set[str] = set()
    for raw in data["rules"]:
        when: Mapping[str, Any] = raw.get("when", {})
        unknown = set(when) - {
            "kinds",
            "reasons",
            "categories",
            "categories_not",
            "item_opened",
            "days_since_delivery_over",
            "amount_over",
        }
        if unknown:
            raise ValueError(f"rule {raw['id']}: unknown conditions {sorted(unknown)}")
        if raw["id"] in seen:
            raise ValueError(f"rule {raw['id']}: duplicate id")
        seen.add(raw["id"])
        days = when.get("days_since_delivery_over")
        amount = when.get("amount_over")
        rules.append(
            Rule(
                id=raw["id"],
                verdict=Verdict(raw["verdict"]),
                description=raw["description"],
                customer_message=dict(raw.get("customer_message", {})),
                kinds=_set(when.get("kinds"), CaseKind),
                reasons=_set(when.get("reasons"), RequestReason),
                categories=_set(when.get("categories"), str),
                categories_not=_set(when.get("categories_not"), str),
                item_opened=when.get("item_opened"),
                days_since_delivery_over=float(days) if days is not None else None,
                amount_over_cents=_cents(amount) if amount is not None else None,
            )
        )
    if not rules:
        raise ValueError("no rules")
    shipping = data.get("return_shipping_paid_by", {})
    review = data.get("negative_review", {})
    auto_close = data.get("auto_close_after_hours")
    return Policy(
        version=str(data.get("version", "")),
        currency=str(data.get("currency", "CNY")),
        rules=tuple(rules),
        shipping_paid_by={
            RequestReason(k): ShippingPayer(v) for k, v in shipping.items() if k != "default"
        },
        default_shipping_payer=ShippingPayer(shipping.get("default", "shop")),
        return_address=str(data.get("return_address", "")),
        negative_review=NegativeReviewPolicy(
            max_rating=int(review.get("max_rating", 2)),
            reply_within=timedelta(hours=float(review.get("reply_within_hours", 24))),
        ),
        auto_close_after=timedelta(hours=float(auto_close)) if auto_close else None,
    )


def load_policy(path: str | Path | None = None) -> Policy:
    """The packaged policy, or a shop's own file."""
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files("kefu_aftersales").joinpath("data/policy.json").read_text("utf-8")
    return Policy.from_data(json.loads(text))
