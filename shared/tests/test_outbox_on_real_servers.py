"""The outbox: a crash between the write and the publish loses nothing."""

import json
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import pytest
from faststream.kafka import KafkaBroker
from kefu_shared.broker import publish_outbox_message
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, EventData, utcnow
from kefu_shared.outbox import OutboxMessage, OutboxRelay
from kefu_shared.testing import read_topic
from pymongo.asynchronous.database import AsyncDatabase


class CaseOpened(EventData):
    event_type: ClassVar[str] = "test.case_opened"
    topic: ClassVar[str] = "unused"
    subject_field: ClassVar[str] = "case_id"
    case_id: str


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing handles it."""


def open_case(topic: str) -> Callable[[Stored | None], Change]:
    def decide(current: Stored | None) -> Change:
        count = (current.state["count"] if current else 0) + 1
        event = Envelope.wrap(CaseOpened(case_id="case-1"), source="aftersales")
        return Change({"count": count}, [OutboxMessage.from_envelope(event, topic)])

    return decide


async def test_events_written_before_a_crash_are_published_by_the_next_relay(
    db: AsyncDatabase[dict[str, Any]],
    kafka_bootstrap: str,
    broker_factory: Callable[..., KafkaBroker],
    unique: str,
) -> None:
    topic = f"kefu.test.{unique}"
    store = VersionedDocumentStore(db["cases"])
    outcome = await store.mutate("case-1", open_case(topic))
    [event] = outcome.events
    # The process dies here: the change is stored, nothing was published.
    assert await read_topic(kafka_bootstrap, topic, expect=1, timeout=1.5) == []
    pending = await db["cases"].find_one({"_id": "case-1"})
    assert pending is not None
    assert pending["outbox_pending"] is True

    broker = broker_factory(f"k{unique}")
    async with broker:
        await broker.connect()
        relay = OutboxRelay([store], partial(publish_outbox_message, broker))
        assert await relay.relay_once() == 1
        assert await relay.relay_once() == 0

    received = await read_topic(kafka_bootstrap, topic, expect=1, settle=1.0)
    assert [r.headers["ce_id"] for r in received] == [event.id]
    done = await db["cases"].find_one({"_id": "case-1"})
    assert done is not None
    assert done["outbox"] == []
    assert done["outbox_pending"] is False
    assert done["count"] == 1


async def test_a_crash_after_publishing_republishes_under_the_same_event_id(
    db: AsyncDatabase[dict[str, Any]],
    kafka_bootstrap: str,
    broker_factory: Callable[..., KafkaBroker],
    unique: str,
) -> None:
    topic = f"kefu.test.{unique}"
    store = VersionedDocumentStore(db["cases"])
    [event] = (await store.mutate("case-1", open_case(topic))).events

    broker = broker_factory(f"k{unique}")
    async with broker:
        await broker.connect()

        async def publish_then_die(message: OutboxMessage) -> None:
            await publish_outbox_message(broker, message)
            raise Crash

        with pytest.raises(Crash):
            await OutboxRelay([store], publish_then_die).relay_once()
        relay = OutboxRelay([store], partial(publish_outbox_message, broker))
        assert await relay.relay_once() == 1

    received = await read_topic(kafka_bootstrap, topic, expect=2, settle=1.0)
    assert [r.headers["ce_id"] for r in received] == [event.id, event.id]


async def test_an_event_reaches_kafka_as_it_was_staged_whatever_form_the_document_holds(
    db: AsyncDatabase[dict[str, Any]],
    kafka_bootstrap: str,
    broker_factory: Callable[..., KafkaBroker],
    unique: str,
) -> None:
    """Staged now (packed in one field) or by a version before the packed form (field by field,
    still pending at the upgrade): the relay publishes the same key, body and headers."""
    topic = f"kefu.test.{unique}"
    body = json.dumps({"case_id": "case-1", "note": "退货地址：上海"}, ensure_ascii=False)
    headers = {"ce_id": "e-packed", "ce_type": "kefu.test.case_opened.v1"}
    store = VersionedDocumentStore(db["cases"])
    staged = OutboxMessage(id="e-packed", topic=topic, key="case-1", body=body, headers=headers)
    await store.mutate("case-1", lambda current: Change({"count": 1}, [staged]))
    old_form = {
        "id": "e-old",
        "topic": topic,
        "key": "case-2",
        "body": body,
        "headers": {**headers, "ce_id": "e-old"},
        "created_at": utcnow(),
        "trace": {},
    }
    await db["cases"].insert_one(
        {
            "_id": "case-2",
            "version": 1,
            "count": 1,
            "applied": [],
            "outbox": [old_form],
            "outbox_pending": True,
        }
    )

    broker = broker_factory(f"k{unique}")
    async with broker:
        await broker.connect()
        relay = OutboxRelay([store], partial(publish_outbox_message, broker))
        assert await relay.relay_once() == 2

    received = await read_topic(kafka_bootstrap, topic, expect=2, settle=0.5)
    by_id = {r.headers["ce_id"]: r for r in received}
    assert sorted(by_id) == ["e-old", "e-packed"]
    for event_id, key in (("e-packed", b"case-1"), ("e-old", b"case-2")):
        assert by_id[event_id].key == key
        assert by_id[event_id].value.decode() == body
        assert by_id[event_id].headers["ce_type"] == "kefu.test.case_opened.v1"
    for doc_id in ("case-1", "case-2"):
        done = await db["cases"].find_one({"_id": doc_id})
        assert done is not None
        assert (done["outbox"], done["outbox_pending"]) == ([], False)


async def test_concurrent_writers_never_lose_an_update_or_an_event(
    db: AsyncDatabase[dict[str, Any]], unique: str
) -> None:
    import asyncio

    store = VersionedDocumentStore(db["cases"])
    outcomes = await asyncio.gather(*(store.mutate("case-1", open_case("t")) for _ in range(10)))
    assert all(o.changed for o in outcomes)
    doc = await db["cases"].find_one({"_id": "case-1"})
    assert doc is not None
    assert doc["count"] == 10
    assert len(doc["outbox"]) == 10
    assert doc["version"] == 10


async def test_indexes_are_ensured_again_on_every_restart(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    from kefu_shared.mongo import IndexSpec, ensure_indexes, outbox_index

    specs = [
        outbox_index("cases"),
        IndexSpec("cases", [("customer_id", 1), ("opened_at", -1)], name="by_customer"),
        IndexSpec("cases", [("ticket", 1)], unique=True, name="ticket_unique"),
    ]
    for _ in range(3):  # every start of the service runs this again
        await ensure_indexes(db, specs)
    names = {ix["name"] for ix in await (await db["cases"].list_indexes()).to_list()}
    assert {"outbox_pending", "by_customer", "ticket_unique"} <= names


def numbered_case(topic: str, n: int) -> Callable[[Stored | None], Change]:
    def decide(current: Stored | None) -> Change:
        event = Envelope.wrap(CaseOpened(case_id="case-1"), source="aftersales")
        return Change({"count": n}, [OutboxMessage.from_envelope(event, topic)])

    return decide


async def test_a_write_hands_its_events_to_the_relay_which_publishes_them_without_a_sweep(
    db: AsyncDatabase[dict[str, Any]],
    kafka_bootstrap: str,
    broker_factory: Callable[..., KafkaBroker],
    unique: str,
) -> None:
    topic = f"kefu.test.{unique}"
    store = VersionedDocumentStore(db["cases"])
    broker = broker_factory(f"k{unique}")
    async with broker:
        await broker.connect()
        # No run(): nothing sweeps, so only the hand-off can publish.
        relay = OutboxRelay([], partial(publish_outbox_message, broker), poll_seconds=3600)
        relay.add_source(store)
        [event] = (await store.mutate("case-1", open_case(topic))).events
        await relay.idle()

    received = await read_topic(kafka_bootstrap, topic, expect=1, settle=1.0)
    assert [r.headers["ce_id"] for r in received] == [event.id]
    done = await db["cases"].find_one({"_id": "case-1"})
    assert done is not None
    assert done["outbox"] == []
    assert done["outbox_pending"] is False
    assert done["count"] == 1


async def test_events_of_one_document_written_in_quick_succession_go_out_once_and_in_order(
    db: AsyncDatabase[dict[str, Any]],
    kafka_bootstrap: str,
    broker_factory: Callable[..., KafkaBroker],
    unique: str,
) -> None:
    import asyncio

    topic = f"kefu.test.{unique}"
    store = VersionedDocumentStore(db["cases"])
    broker = broker_factory(f"k{unique}")
    written: list[str] = []
    async with broker:
        await broker.connect()
        relay = OutboxRelay([], partial(publish_outbox_message, broker), poll_seconds=3600)
        relay.add_source(store)
        sweeper = asyncio.create_task(relay.run())  # the sweep races the hand-offs too
        for n in range(8):
            written += [
                e.id for e in (await store.mutate("case-1", numbered_case(topic, n))).events
            ]
        await relay.idle()
        await relay.relay_once()
        relay.stop()
        await sweeper

    received = await read_topic(kafka_bootstrap, topic, expect=8, settle=1.0)
    assert [r.headers["ce_id"] for r in received] == written
    done = await db["cases"].find_one({"_id": "case-1"})
    assert done is not None
    assert done["outbox"] == []


class CountingStore(VersionedDocumentStore):
    reads = 0

    async def load(self, doc_id: str) -> Stored | None:
        self.reads += 1
        return await super().load(doc_id)


def add_one(current: Stored | None) -> Change:
    return Change({"count": (current.state["count"] if current else 0) + 1})


async def test_the_next_write_of_a_document_just_written_does_not_read_it_again(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = CountingStore(db["cases"])
    for _ in range(3):
        await store.mutate("case-1", add_one)
    assert store.reads == 1  # only the first write, which found nothing
    doc = await db["cases"].find_one({"_id": "case-1"})
    assert doc is not None
    assert (doc["count"], doc["version"]) == (3, 3)


async def test_a_write_from_another_instance_meanwhile_is_read_again_and_never_lost(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    here, there = CountingStore(db["cases"]), CountingStore(db["cases"])
    await here.mutate("case-1", add_one)
    await there.mutate("case-1", add_one)  # this instance's memory of case-1 is now stale
    await here.mutate("case-1", add_one)
    doc = await db["cases"].find_one({"_id": "case-1"})
    assert doc is not None
    assert (doc["count"], doc["version"]) == (3, 3)
    assert here.reads == 2


async def test_nothing_to_do_is_decided_on_a_fresh_read_not_on_the_memory(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    here, there = CountingStore(db["cases"]), CountingStore(db["cases"])
    await here.mutate("case-1", lambda _: Change({"open": True}))
    await there.mutate("case-1", lambda _: Change({"open": False}))

    def reopen(current: Stored | None) -> Change | None:
        if current is not None and current.state["open"]:
            return None  # what this instance remembers: already open
        return Change({"open": True})

    outcome = await here.mutate("case-1", reopen)
    assert outcome.changed
    doc = await db["cases"].find_one({"_id": "case-1"})
    assert doc is not None
    assert doc["open"] is True


async def test_a_document_expected_new_is_inserted_without_reading_it_first(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    store = CountingStore(db["cases"])
    outcome = await store.mutate("case-1", add_one, message_id="m-1", expect_new=True)
    assert outcome.changed
    assert store.reads == 0
    doc = await db["cases"].find_one({"_id": "case-1"})
    assert doc is not None
    assert (doc["count"], doc["version"], doc["applied"]) == (1, 1, ["m-1"])


async def test_a_document_wrongly_expected_new_is_read_and_decided_on_what_is_stored(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    """A redelivered message, or an id another instance created meanwhile: the guess costs one
    refused insert, never a lost update nor a message applied twice."""
    here, there = CountingStore(db["cases"]), CountingStore(db["cases"])
    await there.mutate("case-1", add_one, message_id="m-1")
    again = await here.mutate("case-1", add_one, message_id="m-1", expect_new=True)
    assert again.duplicate
    assert not again.changed
    later = await here.mutate("case-1", add_one, message_id="m-2", expect_new=True)
    assert later.changed
    doc = await db["cases"].find_one({"_id": "case-1"})
    assert doc is not None
    assert (doc["count"], doc["version"], doc["applied"]) == (2, 2, ["m-1", "m-2"])


def due_times(db: AsyncDatabase[dict[str, Any]]) -> Any:
    from kefu_shared.documents import DueTimes

    return DueTimes(
        db["cases_due"],
        db["cases"],
        due_at=lambda state: state.get("remind_at"),
        may_be_due={"remind_at": {"$ne": None}},
    )


async def test_a_write_that_sets_a_due_time_records_it_and_clearing_it_removes_it(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    from datetime import UTC, datetime, timedelta

    due = due_times(db)
    store = VersionedDocumentStore(db["cases"], due=due)
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    await store.mutate("case-1", lambda _: Change({"remind_at": at}))
    await store.mutate("case-2", lambda _: Change({"remind_at": at + timedelta(hours=1)}))
    assert await due.due(at - timedelta(seconds=1), 10) == []
    assert await due.due(at, 10) == ["case-1"]
    assert await due.due(at + timedelta(hours=2), 10) == ["case-1", "case-2"]
    await store.mutate("case-1", lambda _: Change({"remind_at": None}))
    assert await due.due(at + timedelta(hours=2), 10) == ["case-2"]


async def test_a_due_time_lost_in_a_crash_is_restored_by_reconcile_and_a_stale_one_by_refresh(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    from datetime import UTC, datetime

    due = due_times(db)
    store = VersionedDocumentStore(db["cases"], due=due)
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    await store.mutate("case-1", lambda _: Change({"remind_at": at}))
    await store.mutate("case-2", lambda _: Change({"remind_at": at}))
    # The process died after writing case-1 and before its due time: the entry is missing.
    await db["cases_due"].delete_one({"_id": "case-1"})
    # And case-2 was moved on by a write whose due time was never recorded: stale.
    await db["cases"].update_one({"_id": "case-2"}, {"$set": {"remind_at": None}})
    assert await due.due(at, 10) == ["case-2"]

    assert await due.reconcile() == 1
    assert await due.reconcile() == 0
    assert sorted(await due.due(at, 10)) == ["case-1", "case-2"]
    # Firing case-2 finds nothing due; the timer loop then sets its entry from the document.
    await due.refresh("case-2", await store.load("case-2"))
    assert await due.due(at, 10) == ["case-1"]


async def test_a_due_time_held_for_an_attempt_at_once_is_written_only_if_it_stays_due(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    from datetime import UTC, datetime, timedelta

    due = due_times(db)
    store = VersionedDocumentStore(db["cases"], due=due)
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    later = at + timedelta(hours=1)
    for case in ("done", "again", "stopped"):
        await store.mutate(case, lambda _: Change({"remind_at": at}), hold_due=True)
        await store.mutate(case, lambda _: Change({"remind_at": later}), hold_due=True)
    assert await due.due(later, 10) == []  # held: nothing written yet
    # Finished: never written, so nothing to write or remove.
    await store.mutate("done", lambda _: Change({"remind_at": None}))
    # Due again (a retry): the first write that does not hold it records it.
    await store.mutate("again", lambda _: Change({"remind_at": later}))
    # The attempt stopped without a write: released from the document as it is.
    await store.release_due("stopped")
    assert sorted(await due.due(later, 10)) == ["again", "stopped"]
    assert not any(store.due_held(case) for case in ("done", "again", "stopped"))
    assert await db["cases_due"].count_documents({}) == 2


async def test_reconcile_reads_the_documents_of_each_filter_it_is_given(
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    from datetime import UTC, datetime

    from kefu_shared.documents import DueTimes

    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    # Equalities a store serves from an index, instead of one filter that reads everything.
    due = DueTimes(
        db["cases_due"],
        db["cases"],
        due_at=lambda state: state.get("remind_at"),
        may_be_due=[{"status": "open"}, {"status": "waiting"}],
    )
    await db["cases"].insert_many(
        [
            {"_id": "a", "status": "open", "remind_at": at},
            {"_id": "b", "status": "waiting", "remind_at": at},
            {"_id": "c", "status": "closed", "remind_at": at},  # not read: closed never is due
        ]
    )
    assert await due.reconcile() == 2
    assert sorted(await due.due(at, 10)) == ["a", "b"]
