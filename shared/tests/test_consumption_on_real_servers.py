"""Consumption on the real broker: idempotence, retries with backoff, the dead-letter topic."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from aiokafka.errors import LeaderNotAvailableError, OutOfOrderSequenceNumber
from faststream.kafka import KafkaBroker
from kefu_shared.broker import subscriber_options
from kefu_shared.dead_letter import RetryPolicy
from kefu_shared.documents import Change, Stored, VersionedDocumentStore
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.outbox import OutboxMessage
from kefu_shared.testing import eventually, produce, read_topic
from kefu_shared.topics import dead_letter_topic
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect


class PaymentReceived(EventData):
    event_type: ClassVar[str] = "test.payment_received"
    topic: ClassVar[str] = "unused"
    subject_field: ClassVar[str] = "order_id"
    order_id: str
    amount_cents: int


def envelope(order_id: str = "o-1", amount: int = 100) -> Envelope[Any]:
    return Envelope.wrap(PaymentReceived(order_id=order_id, amount_cents=amount), source="shop")


async def publish(broker: KafkaBroker, topic: str, env: Envelope[Any]) -> None:
    await broker.publish(
        env.kafka_body(), topic=topic, key=env.subject.encode(), headers=env.kafka_headers()
    )


async def test_a_redelivered_message_changes_state_and_emits_events_only_once(
    db: AsyncDatabase[dict[str, Any]],
    broker_factory: Callable[..., KafkaBroker],
    unique: str,
) -> None:
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    store = VersionedDocumentStore(db["orders"])
    broker = broker_factory(service)
    handled: list[str] = []

    @broker.subscriber(topic, **subscriber_options(service))
    async def on_payment(event: Envelope[PaymentReceived]) -> None:
        def decide(current: Stored | None) -> Change:
            paid = (current.state["paid_cents"] if current else 0) + event.data.amount_cents
            out = Envelope.wrap(event.data, source="orders", causation_id=event.id)
            return Change({"paid_cents": paid}, [OutboxMessage.from_envelope(out, "t")])

        await store.mutate(event.data.order_id, decide, message_id=event.id)
        handled.append(event.id)

    env = envelope(amount=250)
    async with broker:
        await broker.start()
        for _ in range(3):  # the same message three times, as a redelivery would bring it
            await publish(broker, topic, env)
        await eventually(lambda: _true(len(handled) == 3))

    doc = await db["orders"].find_one({"_id": "o-1"})
    assert doc is not None
    assert doc["paid_cents"] == 250
    assert len(doc["outbox"]) == 1
    assert doc["applied"] == [env.id]


async def test_poison_messages_go_to_the_dlq_with_the_reason_and_the_next_message_is_handled(
    kafka_bootstrap: str, broker_factory: Callable[..., KafkaBroker], unique: str
) -> None:
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    broker = broker_factory(service)
    good: list[int] = []

    @broker.subscriber(topic, **subscriber_options(service))
    async def on_payment(event: Envelope[PaymentReceived]) -> None:
        good.append(event.data.amount_cents)

    schema_invalid = envelope().model_dump(mode="json")
    schema_invalid["data"] = {"order_id": "o-2", "amount_cents": "lots"}
    await produce(
        kafka_bootstrap,
        topic,
        [b"{not json", json.dumps(schema_invalid).encode(), envelope(amount=7).kafka_body()],
        key=b"o-2",
        headers={"content-type": "application/json"},
    )
    async with broker:
        await broker.start()
        await eventually(lambda: _true(good == [7]))

    dead = await read_topic(kafka_bootstrap, dead_letter_topic(service), expect=2, settle=0.5)
    assert len(dead) == 2
    assert dead[0].value == b"{not json"
    assert dead[0].key == b"o-2"
    assert dead[1].headers["x-dlq-reason"].startswith("invalid message")
    assert "amount_cents" in dead[1].headers["x-dlq-reason"]
    # Same key, same partition: the two poison messages were the first two offsets there.
    assert len({r.headers["x-original-partition"] for r in dead}) == 1
    for record, offset in zip(dead, (0, 1), strict=True):
        assert record.headers["x-original-topic"] == topic
        assert record.headers["x-original-offset"] == str(offset)
        assert record.headers["x-attempts"] == "1"


async def test_a_failing_handler_is_retried_with_growing_backoff_then_succeeds(
    kafka_bootstrap: str, broker_factory: Callable[..., KafkaBroker], unique: str
) -> None:
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    broker = broker_factory(service, RetryPolicy(attempts=4, initial_backoff=0.2, max_backoff=2))
    calls: list[float] = []

    @broker.subscriber(topic, **subscriber_options(service))
    async def flaky(event: Envelope[PaymentReceived]) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RuntimeError("courier API hiccup")

    async with broker:
        await broker.start()
        await publish(broker, topic, envelope())
        await eventually(lambda: _true(len(calls) == 3))
        await asyncio.sleep(0.5)

    assert len(calls) == 3
    first_gap, second_gap = calls[1] - calls[0], calls[2] - calls[1]
    assert first_gap >= 0.1  # attempt 1 waits 0.1-0.2 s
    assert second_gap >= 0.2  # attempt 2 waits 0.2-0.4 s
    assert await read_topic(kafka_bootstrap, dead_letter_topic(service), expect=1, timeout=1) == []


async def test_a_handler_that_keeps_failing_is_dead_lettered_after_the_last_attempt(
    kafka_bootstrap: str, broker_factory: Callable[..., KafkaBroker], unique: str
) -> None:
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    broker = broker_factory(service, RetryPolicy(attempts=3, initial_backoff=0.05, max_backoff=0.1))
    calls: list[str] = []

    @broker.subscriber(topic, **subscriber_options(service))
    async def broken(event: Envelope[PaymentReceived]) -> None:
        calls.append(event.id)
        if event.data.amount_cents < 0:
            raise RuntimeError("negative amount cannot be booked")

    async with broker:
        await broker.start()
        await publish(broker, topic, envelope(amount=-1))
        await publish(broker, topic, envelope(amount=5))
        await eventually(lambda: _true(len(calls) == 4))

    [dead] = await read_topic(kafka_bootstrap, dead_letter_topic(service), expect=1, settle=0.5)
    assert dead.headers["x-attempts"] == "3"
    assert dead.headers["x-dlq-error-type"] == "RuntimeError"
    assert "negative amount" in dead.headers["x-dlq-reason"]


@pytest.mark.parametrize(
    "outage",
    [
        AutoReconnect("store restarting"),
        LeaderNotAvailableError(),  # a publish while the broker restarts
        OutOfOrderSequenceNumber(),  # a publish on a producer being renewed
    ],
    ids=type,
)
async def test_a_dependency_outage_is_waited_out_not_dead_lettered(
    kafka_bootstrap: str,
    broker_factory: Callable[..., KafkaBroker],
    unique: str,
    outage: Exception,
) -> None:
    topic = f"kefu.test.{unique}"
    service = f"k{unique}"
    broker = broker_factory(service, RetryPolicy(attempts=1, initial_backoff=0.05, max_backoff=0.1))
    calls: list[str] = []

    @broker.subscriber(topic, **subscriber_options(service))
    async def needs_store(event: Envelope[PaymentReceived]) -> None:
        calls.append(event.id)
        if len(calls) <= 3:
            raise outage

    async with broker:
        await broker.start()
        await publish(broker, topic, envelope())
        await eventually(lambda: _true(len(calls) == 4))

    assert await read_topic(kafka_bootstrap, dead_letter_topic(service), expect=1, timeout=1) == []


async def _true(value: bool) -> bool:
    return value


async def test_with_several_consumer_workers_each_key_is_still_handled_in_order(
    broker_factory: Callable[..., KafkaBroker], kafka_bootstrap: str, unique: str
) -> None:
    import random

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"kefu.test.{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    service = f"k{unique}"
    broker = broker_factory(service)
    handled: dict[str, list[int]] = {}
    in_flight, most = 0, 0

    async def on_message(body: dict[str, Any]) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(random.uniform(0, 0.02))  # handlers finish out of step
        handled.setdefault(body["key"], []).append(body["n"])
        in_flight -= 1

    broker.subscriber(topic, **subscriber_options(service, max_workers=4))(on_message)
    keys = [f"customer-{i}" for i in range(8)]
    async with broker:
        await broker.start()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for n in range(10):
                for key in keys:
                    body = json.dumps({"key": key, "n": n}).encode()
                    await producer.send(topic, body, key=key.encode())
            await producer.flush()
        finally:
            await producer.stop()

        async def all_handled() -> bool:
            return sum(len(v) for v in handled.values()) == 80

        await eventually(all_handled, timeout=60)

    assert handled == {key: list(range(10)) for key in keys}
    assert most > 1  # the workers did run side by side
