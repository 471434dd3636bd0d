"""Issue 13 security 5 (inquiry's part): an admin asks for erasure, inquiry erases and confirms."""

from __future__ import annotations

import json
from typing import Any

from inquiry_testkit import make_settings, message
from kefu_inquiry.bootstrap import create_app
from kefu_local.pytest_plugin import auth_header, running
from kefu_shared import topics
from kefu_shared.auth import Role
from kefu_shared.testing import eventually, produce, read_topic
from pymongo import AsyncMongoClient


async def test_an_admin_erasure_request_is_published_and_inquiry_erases_the_customer_once(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = make_settings(service_overrides, unique)
    body = message("我的包裹到哪了？", customer_id="c-erase")
    db = mongo_client[settings.mongodb_database]
    async with running(create_app(settings)) as client:
        accepted = await client.post("/messages", json=body)
        assert accepted.status_code == 202, accepted.text
        inquiry_id = accepted.json()["inquiry_id"]

        refused = await client.post(
            "/privacy/erasure-requests",
            json={"customer_id": "c-erase"},
            headers=auth_header(Role.SUPERVISOR, "boss"),
        )
        assert refused.status_code == 403
        missing = await client.post("/privacy/erasure-requests", json={})
        assert missing.status_code == 422
        assert "customer_id" in missing.text

        asked = await client.post(
            "/privacy/erasure-requests",
            json={"customer_id": "c-erase", "request_id": f"er-{unique}", "reason": "own wish"},
        )
        assert asked.status_code == 202, asked.text
        again = await client.post(
            "/privacy/erasure-requests",
            json={"customer_id": "c-erase", "request_id": f"er-{unique}"},
        )
        assert again.json()["published"] is False

        erased = await read_topic(
            kafka_bootstrap, settings.topic(topics.PRIVACY_EVENTS), expect=1, timeout=60
        )
        assert [e.json()["data"]["service"] for e in erased] == ["inquiry"]
        assert erased[0].json()["data"]["documents"] == 1
        requests = await read_topic(
            kafka_bootstrap, settings.topic(topics.PRIVACY_REQUESTS), expect=1, settle=1.0
        )
        assert len(requests) == 1
        assert requests[0].json()["data"]["requested_by"] == "test-admin"

        # A redelivered request changes nothing and publishes no second confirmation.
        await produce(kafka_bootstrap, settings.topic(topics.PRIVACY_REQUESTS), [requests[0].value])

        async def view_is_anonymised() -> bool:
            view = (await client.get(f"/inquiries/{inquiry_id}")).json()
            return bool(view["customer_name"] == "[erased]")

        await eventually(view_is_anonymised)
        view = (await client.get(f"/inquiries/{inquiry_id}")).json()
        assert view["channel"] == "chat"  # kept for the KPIs
        assert view["category"]
        confirmations = await read_topic(
            kafka_bootstrap, settings.topic(topics.PRIVACY_EVENTS), expect=2, timeout=5
        )
        assert len(confirmations) == 1

    dump = json.dumps(
        [d async for d in db["inquiries"].find({"customer_id": "c-erase"})],
        default=str,
        ensure_ascii=False,
    )
    for personal in ("王芳", "13812345678", "wang.fang@example.com", "包裹"):
        assert personal not in dump
