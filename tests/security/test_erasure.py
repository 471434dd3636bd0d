"""Issue 13, security 5: one erasure request, five confirmations, no personal data left."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kefu_shared import topics
from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.envelope import Envelope
from kefu_shared.testing import produce, read_topic
from pymongo import AsyncMongoClient

from .apps import SERVICES
from .fleet import dump_databases, fleet

NAME, PHONE, EMAIL = "Zhao Lei", "13998765432", "zhao.lei@example.com"
STREET = "文一西路 88 号"


def order(customer_id: str, order_id: str, **extra: Any) -> bytes:
    event = CommerceOrderEvent.model_validate(
        {
            "kind": "placed",
            "order_id": order_id,
            "customer_id": customer_id,
            "customer_name": NAME,
            "channel": "web",
            "language": "zh-CN",
            "contact": {"email": EMAIL, "phone": PHONE},
            "lines": [
                {
                    "sku": "JZ-1983",
                    "name": "1983",
                    "category": "liquor",
                    "quantity": 1,
                    "unit_price_cents": 19800,
                    "catalogue_unit_price_cents": 19800,
                }
            ],
            "total_cents": 19800,
            "address": {
                "province": "浙江省",
                "city": "杭州市",
                "district": "西湖区",
                "street": STREET,
                "receiver": NAME,
                "phone": PHONE,
            },
            "placed_at": datetime.now(UTC).isoformat(),
            **extra,
        }
    )
    return Envelope.wrap(event, source="commerce-platform").kafka_body()


def question(customer_id: str, message_id: str) -> bytes:
    message = CustomerMessage(
        message_id=message_id,
        channel="chat",
        customer_id=customer_id,
        customer_name=NAME,
        contact={"email": EMAIL, "phone": PHONE},
        content="请问可以开发票吗？",
        language="zh",
        sent_at=datetime.now(UTC),
    )
    return Envelope.wrap(message, source="channel-chat").kafka_body()


async def test_an_erasure_request_is_confirmed_by_all_five_services_and_leaves_no_personal_data(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    # The services log at INFO (the drivers log whole documents at DEBUG, never on in production).
    logged = Captured()
    root = logging.getLogger()
    root.addHandler(logged)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        await journey(service_overrides, unique, kafka_bootstrap, mongo_client)
    finally:
        root.removeHandler(logged)
        root.setLevel(previous)
    # Logs name ids, never contacts: nothing the journey logged holds the phone or e-mail.
    assert logged.messages  # the capture saw the journey
    leaky = [m[:200] for m in logged.messages if PHONE in m or EMAIL in m]
    assert leaky == []


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


async def journey(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    customer = f"c-erase-{unique[-6:]}"
    prefix = service_overrides["topic_prefix"]
    async with fleet(service_overrides, unique) as clients:
        article = {
            "question": "如何开发票？",
            "answer": "在订单详情页点击“申请发票”。",
            "keywords": ["发票"],
            "language": "zh",
            "category": "order",
        }
        created = await clients["inquiry"].post("/knowledge-base/articles", json=article)
        assert created.status_code == 201
        await produce(
            kafka_bootstrap,
            prefix + topics.COMMERCE_ORDERS,
            [order(customer, f"O-{unique[-6:]}")],
            key=customer.encode(),
        )
        await produce(
            kafka_bootstrap,
            prefix + topics.inbound_channel_topic("chat"),
            [question(customer, f"m-{unique}")],
            key=customer.encode(),
        )
        # The bot's answer reached the notifier: the contact is now known there too.
        await read_topic(kafka_bootstrap, prefix + topics.NOTIFIER_EVENTS, expect=1, timeout=60)
        before = await dump_databases(mongo_client, service_overrides)
        held = {s for s, text in before.items() if PHONE in text or EMAIL in text}
        assert {"inquiry", "notifier", "orders"} <= held

        asked = await clients["inquiry"].post(
            "/privacy/erasure-requests", json={"customer_id": customer, "reason": "PIPL"}
        )
        assert asked.status_code == 202, asked.text
        confirmed = await read_topic(
            kafka_bootstrap, prefix + topics.PRIVACY_EVENTS, expect=5, timeout=90
        )
        assert sorted(r.json()["data"]["service"] for r in confirmed) == sorted(SERVICES)

    after = await dump_databases(mongo_client, service_overrides)
    leaks = {
        service: [p for p in (NAME, PHONE, EMAIL, STREET) if p in text]
        for service, text in after.items()
    }
    assert leaks == {s: [] for s in SERVICES}
    # Ids and amounts needed for accounting stay.
    assert f"O-{unique[-6:]}" in after["orders"]
    assert "19800" in after["orders"]
