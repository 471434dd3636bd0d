"""Issue 13, security: phone, e-mail and street sealed at rest in every service that keeps them.

All five services run with data keys; an order (orders, after-sales' projection), a chat
question (inquiry) and the notices they cause (notifier) carry the customer's contacts. Once
every outbox is drained, PyMongo reads every collection: the contacts are nowhere in clear, and
each service still serves them unmasked to an admin.
"""

from __future__ import annotations

from typing import Any

from kefu_shared import topics
from kefu_shared.crypto import new_key
from kefu_shared.testing import eventually, produce, read_topic
from pymongo import AsyncMongoClient

from .fleet import database, dump_databases, fleet
from .test_erasure import EMAIL, PHONE, STREET, order, question

SEALING = ("inquiry", "notifier", "orders", "aftersales")
ARTICLE = {
    "question": "如何开发票？",
    "answer": "在订单详情页点击“申请发票”。",
    "keywords": ["发票"],
    "language": "zh",
    "category": "order",
}


async def _drained(mongo: AsyncMongoClient[dict[str, Any]], overrides: dict[str, Any]) -> bool:
    """No event waits in any outbox (a pending event is a message, not data at rest)."""
    for service in SEALING:
        db = mongo[database(overrides, service)]
        for name in await db.list_collection_names():
            if await db[name].count_documents({"outbox_pending": True}):
                return False
    return True


async def test_contacts_and_addresses_are_in_no_database_in_clear(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    overrides = {**service_overrides, "data_keys": {"k1": new_key()}, "data_key_active": "k1"}
    customer = f"c-seal-{unique[-6:]}"
    order_id = f"O-{unique[-6:]}"
    prefix = overrides["topic_prefix"]
    async with fleet(overrides, unique) as clients:
        # The bot answers the question from this article: a notice to the customer's contact.
        created = await clients["inquiry"].post("/knowledge-base/articles", json=ARTICLE)
        assert created.status_code == 201
        await produce(kafka_bootstrap, prefix + topics.COMMERCE_ORDERS, [order(customer, order_id)])
        await produce(
            kafka_bootstrap,
            prefix + topics.inbound_channel_topic("chat"),
            [question(customer, f"m-{unique}")],
            key=customer.encode(),
        )
        # A notice reached the notifier and was handled: its contact card and routes are kept.
        await read_topic(kafka_bootstrap, prefix + topics.NOTIFIER_EVENTS, expect=1, timeout=60)

        async def aftersales_knows_the_order() -> bool:
            return (await clients["aftersales"].get(f"/orders/{order_id}")).status_code == 200

        await eventually(aftersales_knows_the_order, timeout=60)
        await eventually(lambda: _drained(mongo_client, overrides), timeout=60)
        stored = await dump_databases(mongo_client, overrides)

        unmasked = await clients["orders"].get(f"/orders/{order_id}?unmasked=true")
        assert unmasked.json()["address"]["street"] == STREET

    clear = {s: [v for v in (PHONE, EMAIL, STREET) if v in stored[s]] for s in SEALING}
    assert clear == {s: [] for s in SEALING}
    assert [s for s in SEALING if "enc:v1:k1:" not in stored[s]] == []
