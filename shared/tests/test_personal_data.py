"""Personal data in the kernel: field encryption with rotation, audit log, retention purge."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kefu_shared.audit import AuditLog
from kefu_shared.crypto import (
    DecryptionError,
    FieldCipher,
    SealedFields,
    SealedStore,
    is_encrypted,
    new_key,
)
from kefu_shared.documents import Change, Stored
from kefu_shared.outbox import OutboxMessage, OutboxRelay
from kefu_shared.pii import mask_address, redact_card_numbers
from kefu_shared.retention import PURGED, RetentionJob, RetentionRule
from pymongo.asynchronous.database import AsyncDatabase


def test_encrypted_fields_round_trip_and_name_their_key() -> None:
    cipher = FieldCipher({"k1": new_key()}, "k1")
    sealed = cipher.encrypt("13812345678", field="phone")
    assert sealed is not None
    assert is_encrypted(sealed)
    assert sealed.startswith("enc:v1:k1:")
    assert "13812345678" not in sealed
    assert cipher.decrypt(sealed, field="phone") == "13812345678"
    assert cipher.encrypt(None, field="phone") is None


def test_after_rotation_old_values_still_decrypt_and_new_ones_use_the_new_key() -> None:
    k1 = new_key()
    old = FieldCipher({"k1": k1}, "k1")
    sealed_before = old.encrypt("wang@example.com", field="email")
    rotated = FieldCipher({"k1": k1, "k2": new_key()}, "k2")
    assert rotated.decrypt(sealed_before, field="email") == "wang@example.com"
    assert (rotated.encrypt("x", field="email") or "").startswith("enc:v1:k2:")
    retired = FieldCipher({"k2": rotated.keys["k2"]}, "k2")
    with pytest.raises(DecryptionError, match="k1"):
        retired.decrypt(sealed_before, field="email")


def test_a_ciphertext_moved_to_another_field_does_not_decrypt() -> None:
    cipher = FieldCipher({"k1": new_key()}, "k1")
    sealed = cipher.encrypt("Chengdu, Jinjiang district", field="address")
    with pytest.raises(DecryptionError):
        cipher.decrypt(sealed, field="email")


def test_card_numbers_are_redacted_and_addresses_masked() -> None:
    text = "pay with 4111 1111 1111 1111 or 5500-0000-0000-0004, order SO1234567890123"
    redacted = redact_card_numbers(text)
    assert "4111" not in redacted
    assert "5500" not in redacted
    assert "SO1234567890123" in redacted  # not Luhn-valid: an order number stays
    assert mask_address("Chengdu Jinjiang 12 Chunxi Road") == "Chengdu ****"


async def test_the_audit_log_appends_and_a_retried_entry_lands_once(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    log = AuditLog(db["audit_log"])
    for _ in range(2):
        await log.record(
            actor="supervisor-1",
            role="supervisor",
            action="order.address_changed",
            subject="SO1",
            source="10.0.0.7",
            before={"city": "Shanghai"},
            after={"city": "Hangzhou"},
            entry_id="change-1",
        )
    await log.record(actor="agent-2", role="agent", action="pii.unmasked", subject="cust-9")
    [entry] = await log.entries(subject="SO1")
    assert (entry.actor, entry.before, entry.after) == (
        "supervisor-1",
        {"city": "Shanghai"},
        {"city": "Hangzhou"},
    )
    assert [e.action for e in await log.entries()] == ["pii.unmasked", "order.address_changed"]


async def test_retention_purges_old_message_bodies_and_keeps_the_records(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    await db["messages"].insert_many(
        [
            {"_id": f"m{age}", "sent_at": now - timedelta(days=age), "body": f"text {age}"}
            for age in (1, 29, 31, 90)
        ]
    )
    rule = RetentionRule(db["messages"], "sent_at", fields=("body",))
    job = RetentionJob([rule], period=timedelta(days=30), clock=lambda: now)
    assert await job.purge_once() == 2
    assert await job.purge_once() == 0  # already purged: nothing to do
    bodies = {d["_id"]: d["body"] async for d in db["messages"].find({})}
    assert bodies == {"m1": "text 1", "m29": "text 29", "m31": PURGED, "m90": PURGED}


ORDER = {
    "customer_id": "C1",
    "contact": {"phone": "13812345678", "email": None},
    "address": {"city": "杭州市", "street": "文三路 90 号", "phone": ""},
    "audit": [{"before": {"address": {"street": "文三路 90 号"}}}, {"before": None}],
}
PATHS = ("contact.phone", "contact.email", "address.street", "address.phone")
AUDIT_PATHS = (*PATHS, "audit.*.before.address.street", "missing.street")


def test_sealed_fields_seal_listed_paths_in_lists_and_leave_the_rest() -> None:
    fields = SealedFields(FieldCipher({"k1": new_key()}, "k1"), AUDIT_PATHS, scope="orders")
    sealed = fields.seal(ORDER)
    assert "13812345678" not in repr(sealed)
    assert "文三路" not in repr(sealed)
    assert sealed["address"]["city"] == "杭州市"  # not listed: stays searchable
    assert sealed["contact"]["email"] is None
    assert sealed["address"]["phone"] == ""  # nothing to hide
    assert sealed["audit"][1] == {"before": None}
    assert fields.open(sealed) == ORDER
    assert fields.open(ORDER) == ORDER  # written before encryption: reads as it is
    assert ORDER["contact"]["phone"] == "13812345678"  # the input is not changed


def test_sealed_fields_without_keys_pass_values_through() -> None:
    fields = SealedFields(FieldCipher({}, ""), PATHS, scope="orders")
    assert fields.seal(ORDER) == ORDER


async def test_a_sealed_store_writes_ciphertext_and_gives_use_cases_plain_values(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    fields = SealedFields(FieldCipher({"k1": new_key()}, "k1"), AUDIT_PATHS, scope="orders")
    store = SealedStore(db["orders"], fields)
    seen: list[str] = []

    def place(current: Stored | None) -> Change:
        return Change(dict(ORDER))

    def add_note(current: Stored | None) -> Change:
        assert current is not None
        seen.append(current.state["contact"]["phone"])
        return Change({**current.state, "note": "call after 18:00"})

    placed = await store.mutate("O1", place, message_id="m1")
    assert placed.stored is not None
    assert placed.stored.state["contact"]["phone"] == "13812345678"
    await store.mutate("O1", add_note, message_id="m2")
    assert seen == ["13812345678"]
    raw = await db["orders"].find_one({"_id": "O1"})
    assert raw is not None
    assert "13812345678" not in repr(raw)
    assert "文三路" not in repr(raw)
    assert raw["note"] == "call after 18:00"
    loaded = await store.load("O1")
    assert loaded is not None
    assert loaded.state["address"]["street"] == "文三路 90 号"
    duplicate = await store.mutate("O1", add_note, message_id="m2")
    assert duplicate.duplicate
    assert duplicate.stored is not None
    assert duplicate.stored.state["contact"]["phone"] == "13812345678"


async def test_retention_purges_texts_inside_optional_sub_documents_only_where_they_exist(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    old = now - timedelta(days=40)
    await db["cases"].insert_many(
        [
            {"_id": "reviewed", "closed_at": old, "review": {"text": "差评", "rating": 1}},
            {"_id": "no-review", "closed_at": old, "review": None},
            {"_id": "recent", "closed_at": now, "review": {"text": "好评", "rating": 5}},
            {"_id": "open", "closed_at": old, "state": "open", "review": {"text": "等待"}},
        ]
    )
    rule = RetentionRule(
        db["cases"], "closed_at", fields=("review.text",), where={"state": {"$ne": "open"}}
    )
    job = RetentionJob([rule], period=timedelta(days=30), clock=lambda: now)
    assert await job.purge_once() == 1
    assert await job.purge_once() == 0
    docs = {d["_id"]: d.get("review") async for d in db["cases"].find({})}
    assert docs == {
        "reviewed": {"text": PURGED, "rating": 1},
        "no-review": None,
        "recent": {"text": "好评", "rating": 5},
        "open": {"text": "等待"},
    }


async def test_events_waiting_in_a_sealed_stores_outbox_are_sealed_and_relayed_plain(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    """An event may carry what the document seals (a contact): in the store it is ciphertext
    until the relay opens it to publish."""
    fields = SealedFields(FieldCipher({"k1": new_key()}, "k1"), PATHS, scope="orders")
    store = SealedStore(db["orders"], fields)
    published: list[OutboxMessage] = []

    async def publish(message: OutboxMessage) -> None:
        published.append(message)

    relay = OutboxRelay([store], publish)
    body = json.dumps({"order_id": "O1", "phone": "13812345678"})

    def place(current: Stored | None) -> Change:
        event = OutboxMessage(id="e1", topic="kefu.orders", key="O1", body=body, headers={})
        return Change(dict(ORDER), [event])

    await store.mutate("O1", place, message_id="m1")
    raw = await db["orders"].find_one({"_id": "O1"})
    assert raw is not None
    assert len(raw["outbox"]) == 1
    assert "13812345678" not in repr(raw)
    assert await relay.relay_once() == 1
    assert [m.body for m in published] == [body]
    relayed = await db["orders"].find_one({"_id": "O1"})
    assert relayed is not None
    assert relayed["outbox"] == []
