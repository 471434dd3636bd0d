"""What after-sales knows about an order (its own projection of the commerce platform's order
lifecycle) and the checks a request must pass against it before the policy looks at it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class OrderLine:
    sku: str
    category: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class OrderSnapshot:
    order_id: str
    customer_id: str
    status: str
    """placed, paid, shipped, delivered, cancelled or refunded (the latest lifecycle event)."""
    lines: tuple[OrderLine, ...]
    currency: str = "CNY"
    delivered_at: datetime | None = None
    contact: Mapping[str, str] = field(default_factory=dict)
    """email, phone, wechat_openid, marketplace_im_id (those known)."""
    language: str | None = None
    channel: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status == "delivered" and self.delivered_at is not None

    def line(self, sku: str) -> OrderLine | None:
        return next((line for line in self.lines if line.sku == sku), None)


@dataclass(frozen=True)
class RequestedLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class FieldProblem:
    """A request that cannot be accepted, naming the field (``lines.0.quantity``)."""

    field: str
    message: str
    reason: str
    """Low-cardinality label for metrics: unknown_order, not_delivered, ..."""


@dataclass(frozen=True)
class LineCheck:
    problems: list[FieldProblem] = field(default_factory=list)
    lines: list[OrderLine] = field(default_factory=list)
    """The requested lines with the order's category and price, when there are no problems."""


def check_against_order(
    order: OrderSnapshot | None,
    order_id: str,
    customer_id: str,
    requested: Sequence[RequestedLine],
    already_refunded: Mapping[str, int],
) -> LineCheck:
    """Unknown or undelivered order, another customer's order, a line not in the order, more
    than was bought (less what was refunded before), the same line twice."""
    if order is None:
        return LineCheck([FieldProblem("order_id", f"unknown order {order_id!r}", "unknown_order")])
    if not order.delivered:
        return LineCheck(
            [
                FieldProblem(
                    "order_id",
                    f"order {order_id!r} is {order.status}, not delivered: after-sales starts "
                    "after delivery",
                    "not_delivered",
                )
            ]
        )
    if order.customer_id != customer_id:
        return LineCheck(
            [
                FieldProblem(
                    "customer_id",
                    f"order {order_id!r} belongs to another customer",
                    "customer_mismatch",
                )
            ]
        )
    problems: list[FieldProblem] = []
    found: list[OrderLine] = []
    seen: set[str] = set()
    if not requested:
        problems.append(FieldProblem("lines", "at least one order line", "no_lines"))
    for i, wanted in enumerate(requested):
        line = order.line(wanted.sku)
        if wanted.sku in seen:
            problems.append(
                FieldProblem(f"lines.{i}.sku", f"{wanted.sku!r} is listed twice", "duplicate_line")
            )
            continue
        seen.add(wanted.sku)
        if line is None:
            problems.append(
                FieldProblem(
                    f"lines.{i}.sku",
                    f"{wanted.sku!r} is not a line of order {order_id!r}",
                    "line_not_in_order",
                )
            )
            continue
        left = line.quantity - already_refunded.get(wanted.sku, 0)
        if wanted.quantity > left:
            problems.append(
                FieldProblem(
                    f"lines.{i}.quantity",
                    f"{wanted.quantity} of {wanted.sku!r} asked, but only {line.quantity} bought"
                    + (
                        f" and {line.quantity - left} already refunded"
                        if left < line.quantity
                        else ""
                    ),
                    "quantity_above_bought",
                )
            )
            continue
        found.append(OrderLine(wanted.sku, line.category, wanted.quantity, line.unit_price_cents))
    return LineCheck(problems, [] if problems else found)
