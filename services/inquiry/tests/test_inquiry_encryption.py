"""Issue 13 security 6 (inquiry): contacts sealed at rest, readable after a key rotation."""

from __future__ import annotations

from typing import Any

from inquiry_testkit import make_settings, message
from kefu_inquiry.bootstrap import create_app
from kefu_local.pytest_plugin import auth_header, running
from kefu_shared.auth import Role
from kefu_shared.crypto import new_key
from pymongo import AsyncMongoClient


async def test_stored_contacts_are_encrypted_and_still_read_after_the_data_key_rotates(
    service_overrides: dict[str, Any],
    unique: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    old, new = new_key(), new_key()
    first = make_settings(service_overrides, unique, data_keys={"k1": old}, data_key_active="k1")
    boss = auth_header(Role.SUPERVISOR, "supervisor-1")
    async with running(create_app(first)) as client:
        accepted = await client.post("/messages", json=message("在吗", customer_id="c-enc"))
        inquiry_id = accepted.json()["inquiry_id"]

    raw = await mongo_client[first.mongodb_database]["inquiries"].find_one({"_id": inquiry_id})
    assert raw is not None
    assert raw["contact"]["phone"].startswith("enc:v1:k1:")
    assert raw["contact"]["email"].startswith("enc:v1:k1:")
    assert "13812345678" not in str(raw)

    # Rotation: a new active key; the old one stays configured for values sealed with it.
    rotated = make_settings(
        service_overrides, unique, data_keys={"k1": old, "k2": new}, data_key_active="k2"
    )
    async with running(create_app(rotated)) as client:
        view = await client.get(f"/inquiries/{inquiry_id}?unmasked=true", headers=boss)
        assert view.json()["contact"] == {"phone": "13812345678", "email": "wang.fang@example.com"}
        again = await client.post(
            "/messages", json=message("还在吗", customer_id="c-enc", channel="email")
        )
        assert again.json()["inquiry_id"] == inquiry_id
    raw = await mongo_client[first.mongodb_database]["inquiries"].find_one({"_id": inquiry_id})
    assert raw is not None
    assert raw["contact"]["phone"].startswith("enc:v1:k2:")  # rewritten with the new key
