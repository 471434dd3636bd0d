"""Helpers for the after-sales tests: settings on the real servers, a clock the test moves,
commerce orders, reviews and inquiry events on the real topics, and reading what came out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from kefu_aftersales.settings import AftersalesSettings
from kefu_shared import topics
from kefu_shared.contracts.aftersales import MarketplaceReview
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.testing import eventually, produce, read_topic

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Clock:
    """The service's clock in a test: starts at ``T0``, moves only when told."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def make_settings(overrides: dict[str, Any], unique: str, **extra: Any) -> AftersalesSettings:
    values: dict[str, Any] = {
        **overrides,
        "consumer_group": f"kefu-aftersales-{unique}",
        "timer_scan_seconds": 0.2,
        **extra,
    }
    return AftersalesSettings(**values)


def order_event(
    order_id: str,
    *,
    customer_id: str = "cust-1",
    kind: str = "delivered",
    delivered_days_ago: float = 2,
    lines: list[dict[str, Any]] | None = None,
    now: datetime = T0,
    **extra: Any,
) -> CommerceOrderEvent:
    """A complete order as the commerce platform publishes it after ``kind``."""
    lines = lines or [
        {
            "sku": "WINE-1983",
            "name": "1983",
            "category": "alcohol",
            "quantity": 6,
            "unit_price_cents": 19_900,
            "catalogue_unit_price_cents": 19_900,
        },
        {
            "sku": "MUG-1",
            "name": "mug",
            "category": "kitchen",
            "quantity": 1,
            "unit_price_cents": 5_000,
            "catalogue_unit_price_cents": 5_000,
        },
    ]
    delivered = now - timedelta(days=delivered_days_ago)
    stamps: dict[str, Any] = {"placed_at": delivered - timedelta(days=3)}
    order = ["placed", "paid", "shipped", "delivered"]
    if kind in order:
        for step in order[1 : order.index(kind) + 1]:
            stamps[f"{step}_at"] = delivered - timedelta(days=3 - order.index(step))
    if kind == "delivered":
        stamps["delivered_at"] = delivered
    if kind in ("shipped", "delivered"):
        stamps |= {"carrier": "yunda", "tracking_number": "YD123"}
    total = sum(ln["quantity"] * ln["unit_price_cents"] for ln in lines)
    return CommerceOrderEvent.model_validate(
        {
            "kind": kind,
            "order_id": order_id,
            "customer_id": customer_id,
            "customer_name": "王芳",
            "channel": "web",
            "language": "zh-CN",
            "contact": {"email": "wang.fang@example.com", "phone": "13812345678"},
            "lines": lines,
            "total_cents": total,
            **stamps,
            **extra,
        }
    )


async def publish(bootstrap: str, settings: AftersalesSettings, data: EventData, **env: Any) -> str:
    envelope = Envelope.wrap(data, source="test-adapter", **env)
    await produce(
        bootstrap,
        settings.topic(data.topic),
        [envelope.kafka_body()],
        key=envelope.subject.encode(),
    )
    return envelope.id


async def publish_order(
    bootstrap: str,
    settings: AftersalesSettings,
    client: httpx.AsyncClient,
    event: CommerceOrderEvent,
) -> None:
    """Publish and wait until the service's projection has it (status included)."""
    await publish(bootstrap, settings, event)

    async def known() -> bool:
        response = await client.get(f"/orders/{event.order_id}")
        return response.status_code == 200 and response.json()["status"] == _status(event)

    await eventually(known, timeout=30)


def _status(event: CommerceOrderEvent) -> str:
    if event.delivered_at:
        return "delivered"
    if event.shipped_at:
        return "shipped"
    if event.paid_at:
        return "paid"
    return "placed"


def review(
    review_id: str, *, rating: int, order_id: str = "O-1", **extra: Any
) -> MarketplaceReview:
    return MarketplaceReview.model_validate(
        {
            "review_id": review_id,
            "marketplace": "taobao",
            "order_id": order_id,
            "customer_id": "cust-1",
            "rating": rating,
            "text": "包装破损，酒漏了一半",
            "posted_at": T0.isoformat(),
            **extra,
        }
    )


def request_body(order_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "customer_id": "cust-1",
        "order_id": order_id,
        "kind": "return",
        "reason": "quality_problem",
        "lines": [{"sku": "WINE-1983", "quantity": 2}],
        "description": "瓶盖漏酒",
        "evidence": ["https://img.example.com/leak.jpg"],
        "channel": "chat",
        **extra,
    }


async def events(
    bootstrap: str,
    settings: AftersalesSettings,
    *,
    expect: int,
    timeout: float = 20.0,
    settle: float = 0.0,
    **match: Any,
) -> list[dict[str, Any]]:
    """Envelopes on the after-sales events topic (dicts), filtered by top-level or data fields.

    The outbox relay is at least once (a restart may publish an event again, with the same id):
    consumers deduplicate on the envelope id, and so does this helper, reading on until
    ``expect`` distinct events arrived. ``settle`` keeps reading after that, to catch extras.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    want = expect
    while True:
        got = await read_topic(
            bootstrap,
            settings.topic(topics.AFTERSALES_EVENTS),
            expect=want,
            timeout=max(0.5, deadline - loop.time()),
            settle=settle,
        )
        out = list({e["id"]: e for e in (r.json() for r in got)}.values())
        if len(out) >= expect or loop.time() >= deadline:
            break
        want = len(got) + expect - len(out)
    return [e for e in out if all(e.get(k) == v or e["data"].get(k) == v for k, v in match.items())]


async def notifications(
    bootstrap: str, settings: AftersalesSettings, *, expect: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    got = await read_topic(
        bootstrap, settings.topic(topics.NOTIFICATION_REQUESTS), expect=expect, timeout=timeout
    )
    return [r.json() for r in got]


def types(envelopes: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in envelopes]
