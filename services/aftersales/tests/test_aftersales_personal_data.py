"""Personal data in the after-sales service on the real broker and store: contacts sealed at
rest (with key rotation), masked in responses, unmasked only for supervisors and admins with an
audit entry, and marketplace review texts purged after their retention period."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aftersales_testkit import (
    Clock,
    make_settings,
    order_event,
    publish,
    publish_order,
    request_body,
    review,
)
from kefu_aftersales.bootstrap import create_app
from kefu_local.pytest_plugin import auth_header, running
from kefu_shared.auth import Role
from kefu_shared.crypto import new_key
from kefu_shared.retention import PURGED
from kefu_shared.testing import eventually
from pymongo import AsyncMongoClient

PHONE = "13812345678"
EMAIL = "wang.fang@example.com"
KEY_1 = new_key()
KEY_2 = new_key()
AGENT = auth_header(Role.AGENT, "agent-li")
SUPERVISOR = auth_header(Role.SUPERVISOR, "boss-wang")


async def _relayed(
    mongo: AsyncMongoClient[dict[str, Any]], db: str, collection: str, doc_id: str
) -> dict[str, Any]:
    """The stored document as PyMongo sees it, once its events have left the outbox."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal found
        found = await mongo[db][collection].find_one({"_id": doc_id}) or {}
        return bool(found) and not found.get("outbox")

    await eventually(done, timeout=60)
    return found


async def _open_case(client: httpx.AsyncClient, order_id: str) -> str:
    response = await client.post("/cases", json=request_body(order_id), headers=AGENT)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_contacts_are_sealed_at_rest_and_survive_a_key_rotation(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    first = make_settings(service_overrides, unique, data_keys={"k1": KEY_1}, data_key_active="k1")
    db = first.mongodb_database
    async with running(create_app(first, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, first, client, order_event("O-seal-1"))
        old_case = await _open_case(client, "O-seal-1")
        for collection, doc_id in (("orders", "O-seal-1"), ("cases", old_case)):
            raw = await _relayed(mongo_client, db, collection, doc_id)
            assert PHONE not in repr(raw), collection
            assert EMAIL not in repr(raw), collection
            assert raw["contact"]["phone"].startswith("enc:v1:k1:")

    rotated = make_settings(
        service_overrides, unique, data_keys={"k1": KEY_1, "k2": KEY_2}, data_key_active="k2"
    )
    async with running(create_app(rotated, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, rotated, client, order_event("O-seal-2"))
        new_case = await _open_case(client, "O-seal-2")
        raw = await _relayed(mongo_client, db, "cases", new_case)
        assert raw["contact"]["email"].startswith("enc:v1:k2:")
        assert EMAIL not in repr(raw)
        for case_id in (old_case, new_case):
            view = await client.get(f"/cases/{case_id}", params={"unmasked": "true"})
            assert view.status_code == 200, view.text
            assert view.json()["contact"]["phone"] == PHONE


async def test_cases_written_before_encryption_still_read(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    plain = make_settings(service_overrides, unique)
    async with running(create_app(plain, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, plain, client, order_event("O-plain"))
        case_id = await _open_case(client, "O-plain")
    keyed = make_settings(service_overrides, unique, data_keys={"k1": KEY_1})
    async with running(create_app(keyed, clock=Clock())) as client:
        view = await client.get(f"/cases/{case_id}", params={"unmasked": "true"})
        assert view.status_code == 200, view.text
        assert view.json()["contact"]["email"] == EMAIL


async def test_agents_see_contacts_masked_and_an_unmasked_look_is_audited(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique, data_keys={"k1": KEY_1})
    async with running(create_app(settings, clock=Clock()), role=Role.AGENT) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-mask"))
        case_id = await _open_case(client, "O-mask")
        masked = (await client.get(f"/cases/{case_id}")).json()["contact"]
        assert (masked["phone"], masked["email"]) == ("138****5678", "w***@example.com")

        refused = await client.get(f"/cases/{case_id}", params={"unmasked": "true"})
        assert refused.status_code == 403
        assert "unmasked" in refused.text
        as_service = auth_header(Role.SERVICE, "shop-erp")
        refused = await client.get(f"/cases/{case_id}?unmasked=true", headers=as_service)
        assert refused.status_code == 403

        clear = await client.get(f"/cases/{case_id}?unmasked=true", headers=SUPERVISOR)
        assert clear.status_code == 200
        assert clear.json()["contact"]["phone"] == PHONE
        assert clear.json()["contact"]["email"] == EMAIL

        log = await client.get(
            "/audit", params={"subject": case_id, "action": "pii.unmasked"}, headers=SUPERVISOR
        )
        [entry] = log.json()
        assert (entry["actor"], entry["role"], entry["subject"]) == (
            "boss-wang",
            "supervisor",
            case_id,
        )
        assert entry["source"]
        assert entry["at"]
        assert (await client.get("/audit")).status_code == 403  # agents do not read it


async def test_review_texts_of_closed_cases_are_purged_after_the_retention_period(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = make_settings(
        service_overrides, unique, review_retention_days=10, retention_scan_seconds=0.2
    )
    db = mongo_client[settings.mongodb_database]
    clock = Clock()
    async with running(create_app(settings, clock=clock)) as client:
        await publish(kafka_bootstrap, settings, review("r-old", rating=1))
        await publish(kafka_bootstrap, settings, review("r-open", rating=2, text="还没处理"))

        async def both_opened() -> bool:
            return await db["cases"].count_documents({"kind": "negative_review"}) == 2

        await eventually(both_opened, timeout=60)
        old = await db["cases"].find_one({"review.review_id": "r-old"})
        assert old is not None
        answered = await client.post(
            f"/cases/{old['_id']}/review-reply",
            json={"reply": "抱歉，已为您补发", "explanation": "快递挤压"},
            headers=AGENT,
        )
        assert answered.status_code == 200, answered.text
        closed = await client.post(
            f"/cases/{old['_id']}/transitions", json={"to": "closed"}, headers=AGENT
        )
        assert closed.status_code == 200, closed.text

        clock.advance(days=9)  # inside the period: a few scans later, still there
        await asyncio.sleep(1.0)
        assert not await _purged(db, "r-old")
        clock.advance(days=2)

        await eventually(lambda: _purged(db, "r-old"), timeout=30)
        kept = await db["cases"].find_one({"review.review_id": "r-old"})
        assert kept is not None
        assert kept["review"]["rating"] == 1  # the record stays for KPIs
        assert kept["review"]["reply"] == PURGED
        assert kept["state"] == "closed"
        still_open = await db["cases"].find_one({"review.review_id": "r-open"})
        assert still_open is not None
        assert still_open["review"]["text"] == "还没处理"  # open cases keep their text


async def _purged(db: Any, review_id: str) -> bool:
    doc = await db["cases"].find_one({"review.review_id": review_id})
    review = doc["review"] if doc else {}
    return all(review.get(f) == PURGED for f in ("text", "reply", "explanation"))
