"""Helpers for the orders tests: settings on the real servers, a clock the test moves, commerce
and inquiry events, and reading what reached the topics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from kefu_orders.settings import OrdersSettings
from kefu_shared import topics
from kefu_shared.contracts.inquiry import InquiryAgentReplied
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.envelope import Envelope, new_id
from kefu_shared.testing import read_topic

T0 = datetime(2026, 5, 18, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Monday


class FakeClock:
    """The service's clock in tests: moved by the test, shared across restarts."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def make_settings(overrides: dict[str, Any], unique: str, **extra: Any) -> OrdersSettings:
    values: dict[str, Any] = {
        **overrides,
        # A group of its own: tests never share a consumer group (no cross-test rebalances).
        "consumer_group": f"kefu-orders-{unique}",
        "timer_scan_seconds": 0.1,
        "evidence_grace_seconds": 0,
        "note_language": "en",
        **extra,
    }
    return OrdersSettings(**values)


def line(
    sku: str = "JZ-1983",
    name: str = "1983",
    quantity: int = 6,
    unit: int = 19800,
    catalogue: int | None = None,
    category: str = "liquor",
) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": name,
        "category": category,
        "quantity": quantity,
        "unit_price_cents": unit,
        "catalogue_unit_price_cents": unit if catalogue is None else catalogue,
    }


ADDRESS = {
    "province": "浙江省",
    "city": "杭州市",
    "district": "西湖区",
    "street": "文三路 90 号 3 幢 501",
    "receiver": "王芳",
    "phone": "13812345678",
}


def order_body(
    kind: str = "placed",
    *,
    order_id: str | None = None,
    customer_id: str = "cust-1",
    placed_at: datetime = T0,
    lines: list[dict[str, Any]] | None = None,
    total: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A commerce event's data: the complete order after the step ``kind``."""
    lines = lines if lines is not None else [line()]
    computed = sum(li["quantity"] * li["unit_price_cents"] for li in lines)
    body: dict[str, Any] = {
        "kind": kind,
        "order_id": order_id or f"O-{new_id()[:10]}",
        "customer_id": customer_id,
        "customer_name": "Wang Fang",
        "channel": "web",
        "language": "zh-CN",
        "contact": {"email": "wang.fang@example.com", "phone": "13812345678"},
        "lines": lines,
        "total_cents": computed if total is None else total,
        "address": dict(ADDRESS),
        "placed_at": placed_at.isoformat(),
    }
    body.update(extra)
    for key, value in list(body.items()):
        if isinstance(value, datetime):
            body[key] = value.isoformat()
    return body


def step(body: dict[str, Any], kind: str, **extra: Any) -> dict[str, Any]:
    """The same order one lifecycle step later."""
    out = {**body, "kind": kind, **extra}
    for key, value in list(out.items()):
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out


def order_envelope(body: dict[str, Any], **wrap: Any) -> bytes:
    event = CommerceOrderEvent.model_validate(body)
    return Envelope.wrap(event, source="commerce-platform", **wrap).kafka_body()


async def send_all(bootstrap: str, topic: str, messages: list[tuple[str | None, bytes]]) -> None:
    """Publish in this order, with one producer (keys keep one order's events in order)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key.encode() if key else None)
    finally:
        await producer.stop()


async def send_orders(bootstrap: str, settings: OrdersSettings, *bodies: dict[str, Any]) -> None:
    messages: list[tuple[str | None, bytes]] = [(b["order_id"], order_envelope(b)) for b in bodies]
    await send_all(bootstrap, settings.topic(topics.COMMERCE_ORDERS), messages)


def reply_envelope(
    customer_id: str,
    agent_id: str,
    at: datetime,
    *,
    inquiry_id: str | None = None,
    category: str | None = "product",
    channel: str = "chat",
) -> bytes:
    event = InquiryAgentReplied(
        inquiry_id=inquiry_id or f"inq-{new_id()[:8]}",
        customer_id=customer_id,
        channel=channel,  # type: ignore[arg-type]
        category=category,  # type: ignore[arg-type]
        occurred_at=at,
        agent_id=agent_id,
        reply_id=new_id(),
        first_response=True,
        response_seconds=30.0,
    )
    return Envelope.wrap(event, source="inquiry").kafka_body()


async def send_replies(bootstrap: str, settings: OrdersSettings, *envelopes: bytes) -> None:
    messages: list[tuple[str | None, bytes]] = [(None, e) for e in envelopes]
    await send_all(bootstrap, settings.topic(topics.INQUIRY_EVENTS), messages)


async def events(
    bootstrap: str,
    settings: OrdersSettings,
    *,
    expect: int,
    timeout: float = 45.0,
    settle: float = 0.0,
) -> list[dict[str, Any]]:
    got = await read_topic(
        bootstrap,
        settings.topic(topics.ORDERS_EVENTS),
        expect=expect,
        timeout=timeout,
        settle=settle,
    )
    return [r.json() for r in got]


def of_type(found: list[dict[str, Any]], event_type: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in found
        if e["type"] == event_type and all(e["data"].get(k) == v for k, v in match.items())
    ]


async def notifications(
    bootstrap: str, settings: OrdersSettings, *, expect: int, timeout: float = 45.0
) -> list[dict[str, Any]]:
    got = await read_topic(
        bootstrap, settings.topic(topics.NOTIFICATION_REQUESTS), expect=expect, timeout=timeout
    )
    return [r.json() for r in got]


async def dead_letters(
    bootstrap: str, settings: OrdersSettings, *, expect: int, timeout: float = 45.0
) -> list[Any]:
    return await read_topic(
        bootstrap,
        settings.topic(topics.dead_letter_topic("orders")),
        expect=expect,
        timeout=timeout,
    )
