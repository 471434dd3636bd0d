"""Batch subscribers on the real broker: every record handled alone (order per key, its own
retries and dead letter), the batch's offsets committed once it is done."""

import asyncio
import json
from collections.abc import Callable
from typing import Any, ClassVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker
from kefu_shared.batches import HandleOne, batch_subscriber
from kefu_shared.broker import subscriber_options
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.observability import make_tracer_provider
from kefu_shared.testing import eventually, read_topic
from kefu_shared.topics import dead_letter_topic
from pymongo.errors import AutoReconnect


class ParcelScanned(EventData):
    event_type: ClassVar[str] = "test.parcel_scanned"
    topic: ClassVar[str] = "unused"
    subject_field: ClassVar[str] = "parcel_id"
    parcel_id: str
    step: int


def body(parcel: str, step: int) -> bytes:
    return Envelope.wrap(ParcelScanned(parcel_id=parcel, step=step), source="courier").kafka_body()


Record = tuple[bytes, bytes] | tuple[bytes, bytes, list[tuple[str, bytes]]]


async def produce_all(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Every record handed over before the consumer starts, so its first fetch is a batch."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, r[1], key=r[0], headers=r[2] if len(r) > 2 else None)
            for r in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def subscribe(
    broker: KafkaBroker,
    service: str,
    topic: str,
    handle: HandleOne,
    concurrency: int,
    gather_ms: int = 0,
) -> dict[str, Any]:
    """The parcel scans of ``topic`` in batches; returns the subscriber options used."""
    options = subscriber_options(service)
    batch_subscriber(
        broker,
        topic,
        model=Envelope[ParcelScanned],
        handle=handle,
        tracer_provider=make_tracer_provider(service),
        concurrency=concurrency,
        gather_ms=gather_ms,
        title="parcel-scans",
        **options,
    )
    return options


async def committed(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(m.offset for tp, m in offsets.items() if tp.topic == topic)


async def test_a_batch_is_handled_record_by_record_in_key_order_and_committed_once(
    kafka_bootstrap: str, broker_factory: Callable[..., KafkaBroker], unique: str
) -> None:
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    broker = broker_factory(service)
    handled: list[tuple[str, int]] = []
    in_flight = 0
    most_in_flight = 0

    async def on_scan(event: Envelope[ParcelScanned]) -> None:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.01)  # a store write
        in_flight -= 1
        handled.append((event.data.parcel_id, event.data.step))

    options = subscribe(broker, service, topic, on_scan, concurrency=8)
    invalid = json.loads(body("p-bad", 1))
    invalid["data"]["step"] = "third"
    records: list[Record] = [
        (f"p-{p}".encode(), body(f"p-{p}", step)) for step in range(3) for p in range(20)
    ]
    records[5:5] = [(b"p-5", b"{not json")]
    records[30:30] = [(b"p-bad", json.dumps(invalid).encode())]
    # A valid body whose header is not UTF-8: FastStream's own batch parser fails on it.
    bad_header = body("p-hdr", 0)
    records[40:40] = [(b"p-hdr", bad_header, [("origin", b"\xff\xfe")])]
    await produce_all(kafka_bootstrap, topic, records)

    async with broker:
        await broker.start()
        await eventually(lambda: _true(len(handled) == 60))

    for parcel in range(20):
        steps = [step for p, step in handled if p == f"p-{parcel}"]
        assert steps == [0, 1, 2], f"p-{parcel} handled out of order: {steps}"
    assert most_in_flight > 1  # different parcels were handled at once
    dead = await read_topic(kafka_bootstrap, dead_letter_topic(service), expect=3, settle=0.5)
    reasons = {r.value: r.headers["x-dlq-reason"] for r in dead}
    assert set(reasons) == {b"{not json", json.dumps(invalid).encode(), bad_header}
    assert "invalid message" in reasons[json.dumps(invalid).encode()]
    assert "step" in reasons[json.dumps(invalid).encode()]
    # Every record, the poison ones included, is committed: a restart starts after them.
    assert await committed(kafka_bootstrap, options["group_id"], topic) == len(records)


async def test_one_failing_record_is_retried_or_dead_lettered_alone(
    kafka_bootstrap: str, broker_factory: Callable[..., KafkaBroker], unique: str
) -> None:
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    broker = broker_factory(service)  # 3 attempts
    handled: list[str] = []
    attempts: dict[str, int] = {}

    async def on_scan(event: Envelope[ParcelScanned]) -> None:
        parcel = event.data.parcel_id
        attempts[parcel] = attempts.get(parcel, 0) + 1
        if parcel == "p-outage" and attempts[parcel] <= 5:
            raise AutoReconnect("store restarting")  # transient: retried past the attempts
        if parcel == "p-broken":
            raise RuntimeError("courier API keeps failing")
        handled.append(parcel)

    subscribe(broker, service, topic, on_scan, concurrency=4)
    parcels = ["p-1", "p-outage", "p-2", "p-broken", "p-3"]
    await produce_all(kafka_bootstrap, topic, [(p.encode(), body(p, 0)) for p in parcels])
    async with broker:
        await broker.start()
        await eventually(lambda: _true(len(handled) == 4))
        dead = await read_topic(kafka_bootstrap, dead_letter_topic(service), expect=1, settle=0.5)

    assert sorted(handled) == ["p-1", "p-2", "p-3", "p-outage"]
    assert attempts["p-outage"] == 6
    assert attempts["p-broken"] == 3
    assert len(dead) == 1
    assert dead[0].key == b"p-broken"
    assert dead[0].headers["x-attempts"] == "3"
    assert "courier API keeps failing" in dead[0].headers["x-dlq-reason"]


async def test_records_that_trickle_in_are_gathered_when_the_consumer_may_wait(
    kafka_bootstrap: str, broker_factory: Callable[..., KafkaBroker], unique: str
) -> None:
    # A consumer that may be late (the webhook fan-out) lets the broker gather what trickles
    # in: one fetch, one batch and one commit, instead of one each per record.
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    broker = broker_factory(service)
    handled_at: dict[str, float] = {}
    loop = asyncio.get_running_loop()

    async def on_scan(event: Envelope[ParcelScanned]) -> None:
        handled_at[event.data.parcel_id] = loop.time()

    subscribe(broker, service, topic, on_scan, concurrency=8, gather_ms=2000)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with broker:
            await broker.start()
            await producer.send_and_wait(topic, body("p-first", 0), key=b"p-first")
            await eventually(lambda: _true("p-first" in handled_at))
            sent_at = []
            for n in range(5):
                await producer.send_and_wait(topic, body(f"p-{n}", 0), key=f"p-{n}".encode())
                sent_at.append(loop.time())
                await asyncio.sleep(0.1)
            await eventually(lambda: _true(len(handled_at) == 6))
    finally:
        await producer.stop()

    trickle = [handled_at[f"p-{n}"] for n in range(5)]
    assert sent_at[-1] - sent_at[0] >= 0.4
    # Handled together, after the last one came: they were one batch.
    assert max(trickle) - min(trickle) < 0.1
    assert min(trickle) >= sent_at[-1]


async def _true(value: bool) -> bool:
    return value
