"""Issue 13, security 3: card numbers typed into any free-text input are never stored or sent.

Luhn-valid numbers, grouped with spaces and with dashes, go into every free-text input the
services take (topics and HTTP); afterwards no database of any service and no topic of the run
holds their digits.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from kefu_shared import topics
from kefu_shared.contracts.aftersales import MarketplaceReview
from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.contracts.notifier import NotificationRequested
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.testing import eventually, produce, read_topic
from pymongo import AsyncMongoClient

from .fleet import dump_databases, fleet
from .test_erasure import order

VISA = "4111 1111 1111 1111"
MASTERCARD = "5500-0000-0000-0004"
AMEX = "3782 822463 10005"
DIGITS = [re.sub(r"\D", "", c) for c in (VISA, MASTERCARD, AMEX)]
TEXT = f"卡号 {VISA} / card {MASTERCARD} / amex {AMEX}"


def body(data: EventData) -> bytes:
    return Envelope.wrap(data, source="security-test").kafka_body()


def leaks(text: str) -> list[str]:
    flat = re.sub(r"[\s-]", "", text)
    return [d for d in DIGITS if d in flat]


async def test_card_numbers_in_every_free_text_input_reach_no_database_and_no_topic(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    prefix = service_overrides["topic_prefix"]
    customer = f"c-card-{unique[-6:]}"
    order_id = f"O-card-{unique[-6:]}"
    now = datetime.now(UTC)
    async with fleet(service_overrides, unique) as c:
        # Orders: the buyer's note on the commerce event, then a recorded contact's note.
        day = timedelta(days=1)
        delivered = order(
            customer,
            order_id,
            kind="delivered",
            buyer_note=TEXT,
            placed_at=(now - 3 * day).isoformat(),
            paid_at=(now - 3 * day).isoformat(),
            shipped_at=(now - 2 * day).isoformat(),
            delivered_at=(now - day).isoformat(),
            carrier="yunda",
            tracking_number="YD123",
        )
        await produce(kafka_bootstrap, prefix + topics.COMMERCE_ORDERS, [delivered], key=b"o")
        contact = {
            "customer_id": customer,
            "channel": "phone",
            "at": now.isoformat(),
            "evidence_ref": "rec-1",
            "note": TEXT,
        }
        recorded = await c["orders"].post("/contacts", json=contact)
        assert recorded.status_code < 300, recorded.text
        # Inquiry: a message by topic and one by HTTP.
        msg = {
            "message_id": f"m1-{unique}",
            "channel": "chat",
            "customer_id": customer,
            "customer_name": "Li Na",
            "contact": {"phone": "13700001111"},
            "content": TEXT,
            "sent_at": now.isoformat(),
        }
        chat = prefix + topics.inbound_channel_topic("chat")
        await produce(kafka_bootstrap, chat, [body(CustomerMessage.model_validate(msg))])
        by_http = await c["inquiry"].post(
            "/messages", json={**msg, "message_id": f"m2-{unique}", "channel": "email"}
        )
        assert by_http.status_code == 202, by_http.text
        # After-sales: a marketplace review, and a case opened with a description.
        review = MarketplaceReview.model_validate(
            {
                "review_id": f"r-{unique[-6:]}",
                "marketplace": "taobao",
                "order_id": order_id,
                "customer_id": customer,
                "rating": 1,
                "text": TEXT,
                "posted_at": now.isoformat(),
            }
        )
        await produce(kafka_bootstrap, prefix + topics.MARKETPLACE_REVIEWS, [body(review)])

        async def order_known() -> bool:
            found = await c["aftersales"].get(f"/orders/{order_id}")
            return found.status_code == 200 and found.json().get("status") == "delivered"

        await eventually(order_known, timeout=20)
        case = {
            "customer_id": customer,
            "order_id": order_id,
            "kind": "return",
            "reason": "quality_problem",
            "lines": [{"sku": "JZ-1983", "quantity": 1}],
            "description": TEXT,
            "evidence": [],
            "channel": "chat",
        }
        opened = await c["aftersales"].post("/cases", json=case)
        assert opened.status_code < 300, opened.text
        # Notifier: parameters of a notification request.
        request = NotificationRequested.model_validate(
            {
                "idempotency_key": f"n-{unique}",
                "customer_id": customer,
                "purpose": "bot_answer",
                "template": "bot_answer",
                "parameters": {"question": TEXT, "answer": TEXT},
                "recipient": {"email": "li.na@example.com"},
                "requested_by": "security-test",
            }
        )
        await produce(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, [body(request)])
        # Wait until the notifier has delivered it (the last input's effects are visible).
        await read_topic(kafka_bootstrap, prefix + topics.NOTIFIER_EVENTS, expect=2, timeout=60)

        dumps = await dump_databases(mongo_client, service_overrides)

    # The inputs did arrive (the scan below would be vacuous otherwise).
    assert "card number removed" in dumps["inquiry"]
    assert "card number removed" in dumps["orders"]
    assert "card number removed" in dumps["aftersales"]
    assert {s: leaks(t) for s, t in dumps.items()} == {s: [] for s in dumps}

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        written = [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()
    inputs = {prefix + t for t in (topics.COMMERCE_ORDERS, topics.MARKETPLACE_REVIEWS)}
    inputs |= {chat, prefix + topics.NOTIFICATION_REQUESTS}
    found: dict[str, list[str]] = {}
    for topic in sorted(set(written) - inputs):
        records = await read_topic(kafka_bootstrap, topic, expect=10_000, timeout=2)
        hits = leaks(" ".join(r.value.decode(errors="replace") for r in records))
        if hits:
            found[topic] = hits
    assert found == {}
    # Notification requests are also written by the services: only the test's own may hold them.
    requests = await read_topic(
        kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, expect=10_000, timeout=2
    )
    by_services = [r for r in requests if b"security-test" not in r.value]
    assert [leaks(r.value.decode()) for r in by_services if leaks(r.value.decode())] == []
