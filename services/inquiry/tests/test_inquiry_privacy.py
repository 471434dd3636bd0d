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


async def test_message_texts_of_inquiries_resolved_past_the_retention_period_are_purged(
    service_overrides: dict[str, Any], unique: str
) -> None:
    # Retention shortened to about a second, scanned every 0.2 s.
    settings = make_settings(
        service_overrides, unique, retention_days=1.5 / 86400, retention_scan_seconds=0.2
    )
    async with running(create_app(settings)) as client:
        old = await client.post("/messages", json=message("我要退货", customer_id="c-old"))
        kept = await client.post("/messages", json=message("还没处理", customer_id="c-open"))
        old_id, open_id = old.json()["inquiry_id"], kept.json()["inquiry_id"]
        resolved = await client.post(f"/inquiries/{old_id}/resolve", json={})
        assert resolved.status_code == 200, resolved.text

        async def purged() -> bool:
            view = (await client.get(f"/inquiries/{old_id}")).json()
            return all("purged" in m["content"] for m in view["messages"])

        await eventually(purged, timeout=30)
        view = (await client.get(f"/inquiries/{old_id}")).json()
        assert view["status"] == "resolved"  # the record stays for the KPIs
        still_open = (await client.get(f"/inquiries/{open_id}")).json()
        assert [m["content"] for m in still_open["messages"]] == ["还没处理"]
