"""The local runner against the real processes: a Kafka broker and FerretDB, on a profile and
ports of their own so a developer's running `infra up` (profile dev) is left alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kefu_local.infra import Endpoints, LocalInfra, resolve_endpoints
from kefu_local.process import is_alive, port_open
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

# The first run ever also downloads Kafka and builds FerretDB (~2 minutes); later runs take
# seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PROFILE = "test-infra"
KAFKA_PORT, CONTROLLER_PORT, MONGO_PORT = 19192, 19193, 27127


def new_infra() -> LocalInfra:
    return LocalInfra(PROFILE, KAFKA_PORT, CONTROLLER_PORT, MONGO_PORT)


@pytest.fixture(scope="module")
def local_infra() -> Iterator[LocalInfra]:
    infra = new_infra()
    infra.down()  # start from stopped, even if an earlier run was interrupted
    yield infra
    infra.down()


@pytest.fixture(scope="module")
def endpoints(local_infra: LocalInfra) -> Endpoints:
    return local_infra.up(timeout=120)


def test_up_starts_both_servers_and_returns_their_endpoints(
    local_infra: LocalInfra, endpoints: Endpoints
) -> None:
    assert endpoints == Endpoints(
        kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}",
        mongodb_uri=f"mongodb://127.0.0.1:{MONGO_PORT}/",
        source="local",
    )
    assert local_infra.started == {"kafka", "mongodb"}
    status = local_infra.status()
    assert status["kafka"]["running"]
    assert status["mongodb"]["running"]
    assert (local_infra.logs_dir / "kafka.log").stat().st_size > 0, (
        "log4j must write the broker log"
    )


async def test_a_message_produced_to_kafka_is_consumed_back(endpoints: Endpoints) -> None:
    topic = f"infra-test-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # The topic does not exist yet: the broker auto-creates it with num.partitions=4.
        await producer.send_and_wait(topic, b"hello", key=b"order-1")
        partitions = await producer.partitions_for(topic)
    finally:
        await producer.stop()
    assert len(partitions) == 4

    # A consumer group exercises the group coordinator and __consumer_offsets (replication 1).
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=endpoints.kafka_bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"order-1", b"hello")


async def test_a_document_inserted_in_ferretdb_is_found_again(endpoints: Endpoints) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        endpoints.mongodb_uri, serverSelectionTimeoutMS=5000
    )
    db = client[f"infra_test_{uuid.uuid4().hex[:8]}"]
    try:
        await db.tickets.insert_one({"_id": "t-1", "status": "open", "replies": 0})
        assert await db.tickets.find_one({"status": "open"}) == {
            "_id": "t-1",
            "status": "open",
            "replies": 0,
        }
        # The features the services lean on: unique indexes and atomic single-document upserts.
        await db.tickets.create_index("status", unique=True)
        with pytest.raises(DuplicateKeyError):
            await db.tickets.insert_one({"_id": "t-2", "status": "open"})
        counted = await db.kpis.find_one_and_update(
            {"_id": "day"},
            {"$inc": {"replies": 1}, "$setOnInsert": {"created": True}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert counted == {"_id": "day", "replies": 1, "created": True}
    finally:
        await client.drop_database(db.name)
        await client.close()


def _index_names(plan: dict[str, Any]) -> set[str]:
    """Every index a PostgreSQL plan (as FerretDB's explain returns it) reads."""
    names = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", ()):
        names |= _index_names(child)
    return names


async def test_ferretdb_stores_on_postgresql_and_its_lookups_use_an_index(
    local_infra: LocalInfra, endpoints: Endpoints
) -> None:
    """The reason the runner puts FerretDB on PostgreSQL: a lookup by `_id` or by an indexed
    field must not scan the collection, or every service slows down as its data grows."""
    assert local_infra.status()["mongodb"]["postgresql"]["pid"] is not None
    assert local_infra.store_kind().endswith("(PostgreSQL)")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(endpoints.mongodb_uri)
    db = client[f"infra_index_{uuid.uuid4().hex[:8]}"]
    try:
        await db.cases.create_index("status")
        await db.cases.insert_many(
            [{"_id": f"c-{i}", "status": f"s-{i % 500}", "notes": "x" * 500} for i in range(3000)]
        )
        for query in ({"_id": "c-1234"}, {"_id": "c-1234", "version": 1}, {"status": "s-7"}):
            explained = await db.command("explain", {"find": "cases", "filter": query})
            used = _index_names(explained["queryPlanner"]["Plan"])
            assert used, f"{query} scanned the table: {explained['queryPlanner']['Plan']}"
        assert await db.cases.find_one({"_id": "c-1234"}) is not None
        assert await db.cases.count_documents({"status": "s-7"}) == 6
    finally:
        await client.drop_database(db.name)
        await client.close()


def test_a_second_up_reuses_the_running_processes_quickly(
    local_infra: LocalInfra, endpoints: Endpoints
) -> None:
    before = local_infra.status()
    again = new_infra()  # as a second `infra up` in another terminal would
    started = time.monotonic()
    assert again.up() == endpoints
    elapsed = time.monotonic() - started
    after = again.status()
    assert again.started == frozenset()
    assert (after["kafka"]["pid"], after["mongodb"]["pid"]) == (
        before["kafka"]["pid"],
        before["mongodb"]["pid"],
    )
    assert elapsed < 3, f"reusing running servers took {elapsed:.1f} s"


def test_resolve_endpoints_reuses_running_servers_and_leaves_them_running(
    endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("MONGODB_URI", raising=False)
    monkeypatch.setenv("KEFU_INFRA", "local")
    resolved, stop = resolve_endpoints(
        PROFILE, kafka_port=KAFKA_PORT, controller_port=CONTROLLER_PORT, mongo_port=MONGO_PORT
    )
    assert resolved == endpoints
    assert stop is None, "servers this call did not start are not its to stop"


def test_resolve_endpoints_prefers_servers_named_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")
    monkeypatch.setenv("MONGODB_URI", "mongodb://mongo.example:27017/")
    resolved, stop = resolve_endpoints(PROFILE)
    assert resolved == Endpoints("kafka.example:9092", "mongodb://mongo.example:27017/", "env")
    assert stop is None


def test_down_stops_both_servers_and_closes_their_ports(
    local_infra: LocalInfra, endpoints: Endpoints
) -> None:
    pids = [local_infra.status()["kafka"]["pid"], local_infra.status()["mongodb"]["pid"]]
    local_infra.down()
    assert not any(is_alive(pid) for pid in pids)
    for port in (KAFKA_PORT, CONTROLLER_PORT, MONGO_PORT):
        assert not port_open("127.0.0.1", port), f"port {port} still open"
    status = local_infra.status()
    assert not status["kafka"]["running"]
    assert not status["mongodb"]["running"]
    assert not local_infra.kafka.pid_file.exists()
    assert not local_infra.ferretdb.pid_file.exists()


def test_up_and_down_again_and_again_never_lose_track_of_a_server(
    local_infra: LocalInfra,
) -> None:
    # Right after its start FerretDB's /proc command line read empty for a moment: the runner
    # took the running server for dead ("exited during startup"), and `down` then left it
    # running, orphaned, holding the port for every later `up` (one benchmark run in five).
    for _ in range(3):
        local_infra.up(timeout=120)
        assert local_infra.status()["mongodb"]["running"]
        local_infra.down()
        for port in (KAFKA_PORT, MONGO_PORT):
            assert not port_open("127.0.0.1", port), f"port {port} still open after down"
