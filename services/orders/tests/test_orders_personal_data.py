"""Personal data in the orders service on the real broker and store: contacts and addresses
sealed at rest (with key rotation), masked in responses, unmasked only for supervisors and
admins, and every unmasked look in the audit log."""

from __future__ import annotations

from typing import Any

from kefu_local.pytest_plugin import auth_header, running
from kefu_orders.bootstrap import create_app
from kefu_shared.auth import Role
from kefu_shared.crypto import new_key
from kefu_shared.testing import eventually
from orders_testkit import ADDRESS, FakeClock, make_settings, order_body, send_orders
from pymongo import AsyncMongoClient

PHONE = ADDRESS["phone"]
STREET = ADDRESS["street"]
EMAIL = "wang.fang@example.com"
KEY_1 = new_key()
KEY_2 = new_key()


async def _raw(mongo: AsyncMongoClient[dict[str, Any]], db: str, order_id: str) -> dict[str, Any]:
    """The stored order as PyMongo sees it, once its events have been relayed."""
    found: dict[str, Any] = {}

    async def relayed() -> bool:
        nonlocal found
        found = await mongo[db]["orders"].find_one({"_id": order_id}) or {}
        return bool(found) and not found.get("outbox")

    await eventually(relayed, timeout=60)
    return found


def _clear_text(doc: dict[str, Any]) -> list[str]:
    text = repr(doc)
    return [v for v in (PHONE, STREET, EMAIL, ADDRESS["receiver"]) if v in text]


async def test_contacts_and_addresses_are_sealed_at_rest_and_survive_a_key_rotation(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    first = make_settings(service_overrides, unique, data_keys={"k1": KEY_1}, data_key_active="k1")
    db = first.mongodb_database
    old = order_body(order_id="O-sealed-1")
    async with running(create_app(first, clock=FakeClock())) as client:
        await send_orders(kafka_bootstrap, first, old)
        raw = await _raw(mongo_client, db, "O-sealed-1")
        assert _clear_text(raw) == []
        assert raw["address"]["street"].startswith("enc:v1:k1:")
        assert raw["contact"]["phone"].startswith("enc:v1:k1:")
        assert raw["address"]["city"] == ADDRESS["city"]  # the region stays readable
        view = await client.get("/orders/O-sealed-1", params={"unmasked": "true"})
        assert view.json()["address"]["street"] == STREET

    # Rotation: key 2 seals new values; key 1 still opens the old ones.
    rotated = make_settings(
        service_overrides,
        unique,
        data_keys={"k1": KEY_1, "k2": KEY_2},
        data_key_active="k2",
    )
    async with running(create_app(rotated, clock=FakeClock())) as client:
        await send_orders(kafka_bootstrap, rotated, order_body(order_id="O-sealed-2"))
        raw_new = await _raw(mongo_client, db, "O-sealed-2")
        assert raw_new["address"]["phone"].startswith("enc:v1:k2:")
        assert _clear_text(raw_new) == []
        old_view = await client.get("/orders/O-sealed-1", params={"unmasked": "true"})
        assert old_view.json()["address"]["phone"] == PHONE
        new_view = await client.get("/orders/O-sealed-2", params={"unmasked": "true"})
        assert new_view.json()["address"]["street"] == STREET


async def test_orders_written_before_encryption_still_read(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    plain = make_settings(service_overrides, unique)  # no data keys: stored as it comes
    db = plain.mongodb_database
    async with running(create_app(plain, clock=FakeClock())):
        await send_orders(kafka_bootstrap, plain, order_body(order_id="O-plain"))
        raw = await _raw(mongo_client, db, "O-plain")
        assert raw["address"]["street"] == STREET
    keyed = make_settings(service_overrides, unique, data_keys={"k1": KEY_1})
    async with running(create_app(keyed, clock=FakeClock())) as client:
        view = await client.get("/orders/O-plain", params={"unmasked": "true"})
        assert view.status_code == 200, view.text
        assert view.json()["address"]["street"] == STREET


async def test_agents_see_masked_addresses_and_an_unmasked_look_is_audited(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
) -> None:
    settings = make_settings(service_overrides, unique, data_keys={"k1": KEY_1})
    async with running(create_app(settings, clock=FakeClock()), role=Role.AGENT) as client:
        await send_orders(kafka_bootstrap, settings, order_body(order_id="O-mask"))

        async def arrived() -> bool:
            return (await client.get("/orders/O-mask")).status_code == 200

        await eventually(arrived, timeout=60)
        masked = (await client.get("/orders/O-mask")).json()["address"]
        assert masked["phone"] == "138****5678"
        assert masked["street"] == "文三路 ***"
        assert masked["receiver"] == "王***"
        listed = (await client.get("/orders", params={"customer_id": "cust-1"})).json()
        assert [o["address"]["phone"] for o in listed["items"]] == ["138****5678"]

        refused = await client.get("/orders/O-mask", params={"unmasked": "true"})
        assert refused.status_code == 403
        assert "unmasked" in refused.text
        as_service = auth_header(Role.SERVICE, "shop-erp")
        refused = await client.get("/orders/O-mask?unmasked=true", headers=as_service)
        assert refused.status_code == 403
        history = await client.get("/orders/O-mask/audit?unmasked=true")
        assert history.status_code == 403

        as_supervisor = auth_header(Role.SUPERVISOR, "sup-7")
        clear = await client.get("/orders/O-mask?unmasked=true", headers=as_supervisor)
        assert clear.status_code == 200
        assert clear.json()["address"]["phone"] == PHONE
        assert clear.json()["address"]["street"] == STREET
        still_masked = await client.get("/orders/O-mask", headers=as_supervisor)
        assert still_masked.json()["address"]["phone"] == "138****5678"  # only when asked

        log = await client.get("/audit", params={"subject": "O-mask"}, headers=as_supervisor)
        assert log.status_code == 200
        [entry] = log.json()["entries"]
        assert (entry["actor"], entry["role"], entry["action"], entry["subject"]) == (
            "sup-7",
            "supervisor",
            "pii.unmasked",
            "O-mask",
        )
        assert entry["source"]  # from where: the client's address
        assert entry["at"]
        assert (await client.get("/audit")).status_code == 403  # agents do not read it
