"""The shop's commerce platform in the demo: orders placed, paid, shipped, delivered, refunded.

Orders arrive on ``kefu.commerce.orders`` as the platform would publish them (every event the
whole order snapshot). Some customers chatted with an agent first (sales attribution), some
never pay (reminders, lost orders, expiry), a few ship to a region no partner courier reaches,
a few are refunded after delivery. Timings are in seconds of demo time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kefu_shared.contracts.orders import CommerceEventKind, CommerceOrderEvent
from kefu_shared.envelope import Envelope
from kefu_shared.topics import COMMERCE_ORDERS

CATALOGUE: list[dict[str, Any]] = [
    {"sku": "BJ-1983", "name": "1983", "price": 128_000},
    {"sku": "MT-53", "name": "茅台53度", "price": 299_900},
    {"sku": "WLY-GB", "name": "五粮液礼盒", "price": 159_900},
    {"sku": "FJ-20", "name": "汾酒二十年", "price": 69_800},
    {"sku": "QM-6", "name": "青梅酒", "price": 15_800},
]
ADDRESSES = [
    {"province": "浙江省", "city": "杭州市", "district": "西湖区", "street": "文三路 90 号 3 单元"},
    {"province": "四川省", "city": "成都市", "district": "锦江区", "street": "春熙路 12 号"},
    {"province": "上海市", "city": "上海市", "district": "浦东新区", "street": "世纪大道 100 号"},
    {"province": "西藏", "city": "拉萨市", "district": "城关区", "street": "北京中路 8 号"},
    {"province": "广东省", "city": "深圳市", "district": "南山区", "street": "科技园 6 栋"},
]
UNCOVERED = {"province": "台湾", "city": "台北市", "district": "信义区", "street": "市府路 1 号"}
COURIERS = {"yunda": "YD", "zto": "ZT", "sf": "SF", "ems": "EM"}


@dataclass
class PlannedOrder:
    order_id: str
    customer_id: str
    fate: str  # paid | unpaid | cancelled | refunded | uncovered
    snapshot: dict[str, Any]
    steps: list[tuple[float, CommerceEventKind]] = field(default_factory=list)


def plan_orders(
    *, seed: int, count: int, customers: list[str], languages: dict[str, str]
) -> list[PlannedOrder]:
    rng = random.Random(seed * 31 + 1)
    planned = []
    for i in range(count):
        customer = rng.choice(customers)
        fate = rng.choices(
            ["paid", "unpaid", "cancelled", "refunded", "uncovered"], weights=[62, 16, 5, 12, 5]
        )[0]
        item = rng.choice(CATALOGUE)
        quantity = rng.choice([1, 1, 2, 6])
        price = item["price"]
        # A few orders carry a price that does not match the catalogue: needs attention.
        charged = price - 1000 if rng.random() < 0.06 else price
        address = dict(UNCOVERED if fate == "uncovered" else rng.choice(ADDRESSES))
        address |= {"receiver": f"收货人{i:03d}", "phone": f"138{rng.randrange(10**8):08d}"}
        order_id = f"SO{seed:03d}{i:05d}"
        snapshot = {
            "order_id": order_id,
            "customer_id": customer,
            "customer_name": f"Customer {customer[-4:]}",
            "channel": rng.choice(["web", "app", "wechat", "marketplace"]),
            "language": "zh-CN" if languages.get(customer) == "zh" else "en",
            "contact": {"email": f"{customer}@example.com", "phone": address["phone"]},
            "lines": [
                {
                    "sku": item["sku"],
                    "name": item["name"],
                    "category": "liquor",
                    "quantity": quantity,
                    "unit_price_cents": charged,
                    "catalogue_unit_price_cents": price,
                }
            ],
            "total_cents": charged * quantity,
            "address": address,
        }
        if snapshot["channel"] == "marketplace":
            snapshot["marketplace"] = rng.choice(["taobao", "jd"])
        start = rng.uniform(0, 60)
        steps = [(start, CommerceEventKind.PLACED)]
        if fate == "cancelled":
            steps.append((start + rng.uniform(5, 15), CommerceEventKind.CANCELLED))
        elif fate in ("paid", "refunded", "uncovered"):
            paid = start + rng.uniform(2, 25)
            steps.append((paid, CommerceEventKind.PAID))
            if fate != "uncovered":
                steps.append((paid + rng.uniform(5, 15), CommerceEventKind.SHIPPED))
                steps.append((paid + rng.uniform(20, 35), CommerceEventKind.DELIVERED))
            if fate == "refunded":
                steps.append((paid + rng.uniform(45, 70), CommerceEventKind.REFUNDED))
        planned.append(PlannedOrder(order_id, customer, fate, snapshot, sorted(steps)))
    return _with_a_walk_away(planned, seed)


def _with_a_walk_away(planned: list[PlannedOrder], seed: int) -> list[PlannedOrder]:
    """The earliest unpaid order goes to a customer who never chats: nobody contacts them, so
    the day always has a lost order (counted against the agent on duty). Otherwise whether an
    unpaid customer got an agent's reply within the deadline is a race of the demo's timing."""
    unpaid = [o for o in planned if o.fate == "unpaid"] or planned[:1]
    if not unpaid:
        return planned
    order = min(unpaid, key=lambda o: o.steps[0][0])
    customer = f"C{seed:03d}-walkaway"
    order.customer_id = customer
    order.fate = "unpaid"
    order.steps = order.steps[:1]  # placed, then nothing
    order.snapshot |= {
        "customer_id": customer,
        "customer_name": "Customer walk",
        "contact": {
            "email": f"{customer}@example.com",
            "phone": order.snapshot["address"]["phone"],
        },
    }
    return planned


class OrderBook:
    """Builds each step's full snapshot as the commerce platform would publish it."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed * 7 + 3)
        self._state: dict[str, dict[str, Any]] = {}

    def event(self, order: PlannedOrder, kind: CommerceEventKind) -> Envelope[Any]:
        now = datetime.now(UTC)
        snap = self._state.setdefault(order.order_id, dict(order.snapshot))
        if kind is CommerceEventKind.PLACED:
            snap["placed_at"] = now
        elif kind is CommerceEventKind.PAID:
            snap["paid_at"] = now
        elif kind is CommerceEventKind.SHIPPED:
            code = "yunda" if snap["address"]["province"] != "西藏" else "ems"
            snap |= {
                "shipped_at": now,
                "carrier": code,
                "tracking_number": f"{COURIERS[code]}{self._rng.randrange(10**10):010d}",
            }
        elif kind is CommerceEventKind.DELIVERED:
            snap["delivered_at"] = now
        elif kind is CommerceEventKind.CANCELLED:
            snap |= {"cancelled_at": now, "cancel_reason": "customer changed their mind"}
        elif kind is CommerceEventKind.REFUNDED:
            snap |= {
                "refunded_at": now,
                "refund_id": f"RF-{order.order_id}",
                "refund_amount_cents": snap["total_cents"],
            }
        data = CommerceOrderEvent.model_validate({**snap, "kind": kind})
        return Envelope.wrap(data, source="commerce-platform")


TOPIC = COMMERCE_ORDERS
