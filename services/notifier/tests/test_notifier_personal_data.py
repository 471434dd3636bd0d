"""Personal data in the notifier on the real broker and store: the contact card, delivery
routes and rendered texts sealed at rest (with key rotation, plain records still read), and
rendered texts of finished deliveries purged after the retention period."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from kefu_local.pytest_plugin import running
from kefu_notifier.bootstrap import create_app
from kefu_notifier.settings import NotifierSettings
from kefu_shared import topics
from kefu_shared.crypto import new_key
from kefu_shared.retention import PURGED
from kefu_shared.testing import eventually
from notifier_testkit import FakeClock, SmtpServer, publish, request
from pymongo import AsyncMongoClient

pytestmark = pytest.mark.integration

EMAIL = "li.lei@example.cn"
TRACKING = "SF100200"
KEY_1 = new_key()
KEY_2 = new_key()


def settings_for(overrides: dict[str, Any], smtp: SmtpServer, **extra: Any) -> NotifierSettings:
    return NotifierSettings(
        **{
            **overrides,
            "log_unconfigured_channels": False,
            "dispatch_poll_seconds": 0.1,
            "quiet_hours_channels": [],
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_security": "none",
            **extra,
        }
    )


async def sent(client: httpx.AsyncClient, key: str) -> bool:
    response = await client.get(f"/deliveries/{key}")
    return response.status_code == 200 and response.json()["status"] == "sent"


def survey(key: str, customer_id: str) -> Any:
    """A request without any address: the notifier uses the customer's last known contact."""
    return request(
        key,
        customer_id=customer_id,
        purpose="survey_invitation",
        template="survey_invitation",
        parameters={"survey_url": "https://shop.example/s/1"},
        recipient={},
    )


async def test_contacts_routes_and_texts_are_sealed_at_rest_and_survive_a_key_rotation(
    service_overrides: dict[str, Any],
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = mongo_client[service_overrides["mongodb_database"]]
    topic = service_overrides["topic_prefix"] + topics.NOTIFICATION_REQUESTS
    with SmtpServer() as smtp:
        first = settings_for(service_overrides, smtp, data_keys={"k1": KEY_1}, data_key_active="k1")
        async with running(create_app(first)) as client:
            await publish(kafka_bootstrap, topic, request("ship-1", customer_id="c-9"))
            await eventually(lambda: sent(client, "ship-1"))
        delivery = await db["deliveries"].find_one({"_id": "ship-1"})
        card = await db["customers"].find_one({"_id": "c-9"})
        assert delivery is not None
        assert card is not None
        for raw in (delivery, card):
            assert EMAIL not in repr(raw)
        assert TRACKING not in repr(delivery)  # the rendered text is sealed too
        assert delivery["routes"][0]["address"].startswith("enc:v1:k1:")
        assert card["contact"]["email"].startswith("enc:v1:k1:")

        rotated = settings_for(
            service_overrides, smtp, data_keys={"k1": KEY_1, "k2": KEY_2}, data_key_active="k2"
        )
        async with running(create_app(rotated)) as client:
            await publish(kafka_bootstrap, topic, survey("survey-1", "c-9"))
            await eventually(lambda: sent(client, "survey-1"))
        new = await db["deliveries"].find_one({"_id": "survey-1"})
        assert new is not None
        assert new["routes"][0]["address"].startswith("enc:v1:k2:")
        assert EMAIL not in repr(new)

    # Sent to the real address both times: the second from the card sealed with key 1.
    assert [m["To"] for m in smtp.messages] == [EMAIL, EMAIL]
    assert TRACKING in smtp.messages[0].get_content()


async def test_contacts_stored_before_encryption_still_reach_the_customer(
    service_overrides: dict[str, Any],
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = mongo_client[service_overrides["mongodb_database"]]
    topic = service_overrides["topic_prefix"] + topics.NOTIFICATION_REQUESTS
    with SmtpServer() as smtp:
        async with running(create_app(settings_for(service_overrides, smtp))) as client:
            await publish(kafka_bootstrap, topic, request("plain-1", customer_id="c-old"))
            await eventually(lambda: sent(client, "plain-1"))
        card = await db["customers"].find_one({"_id": "c-old"})
        assert card is not None
        assert card["contact"]["email"] == EMAIL  # no keys: stored as it came
        keyed = settings_for(service_overrides, smtp, data_keys={"k1": KEY_1})
        async with running(create_app(keyed)) as client:
            await publish(kafka_bootstrap, topic, survey("survey-old", "c-old"))
            await eventually(lambda: sent(client, "survey-old"))
    assert [m["To"] for m in smtp.messages] == [EMAIL, EMAIL]


async def test_rendered_texts_of_finished_deliveries_are_purged_after_the_retention_period(
    service_overrides: dict[str, Any],
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = mongo_client[service_overrides["mongodb_database"]]
    topic = service_overrides["topic_prefix"] + topics.NOTIFICATION_REQUESTS
    clock = FakeClock(datetime(2026, 11, 23, 4, 0, tzinfo=UTC))
    with SmtpServer() as smtp:
        settings = settings_for(
            service_overrides,
            smtp,
            data_keys={"k1": KEY_1},
            retention_days=7,
            retention_scan_seconds=0.2,
        )
        async with running(create_app(settings, clock=clock)) as client:
            await publish(kafka_bootstrap, topic, request("old-notice", customer_id="c-1"))
            await eventually(lambda: sent(client, "old-notice"))

            clock.now += timedelta(days=6)  # inside the period: a few scans later, still there
            await publish(kafka_bootstrap, topic, request("new-notice", customer_id="c-2"))
            await eventually(lambda: sent(client, "new-notice"))
            await asyncio.sleep(1.0)
            assert not await purged(db, "old-notice")

            clock.now += timedelta(days=2)
            await eventually(lambda: purged(db, "old-notice"), timeout=30)
            assert not await purged(db, "new-notice")
            log = (await client.get("/deliveries/old-notice")).json()
            assert (log["status"], log["channel"]) == ("sent", "email")  # the record stays


async def purged(db: Any, key: str) -> bool:
    doc = await db["deliveries"].find_one({"_id": key})
    content = (doc or {}).get("content") or {}
    return content.get("subject") == PURGED and content.get("body") == PURGED
