"""The broker restarts while a service publishes: publishing resumes on every partition by
itself, nothing confirmed is lost and each key's events stay in order (issue 13).

Before the kernel renewed its producer, a restart left most partitions refusing every publish
with OutOfOrderSequenceNumber (aiokafka counts a batch it expired unsent as sent; see
``kefu_shared.producer_renewal``) until the service was restarted, while /readyz said ready.
A 2 s request timeout makes the expiry (and so the failure) happen within a short outage.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream.kafka import KafkaBroker
from kefu_local.infra import LocalInfra
from kefu_shared.broker import make_broker
from kefu_shared.dead_letter import RetryPolicy
from kefu_shared.observability import make_tracer_provider
from kefu_shared.producer_renewal import ProducerRenewal
from kefu_shared.settings import KafkaSecuritySettings
from prometheus_client import CollectorRegistry

from .fleet import bring_up, stop_component

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PARTITIONS = 8
KEYS = 16
RESUME_BOUND_SECONDS = 30.0


class Publisher:
    """A kefu broker on a topic of its own, and what its publishes confirmed."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.registry = CollectorRegistry()
        self.renewal = ProducerRenewal(self.registry, "renewal-test")
        self.broker: KafkaBroker = make_broker(
            service="renewal-test",
            bootstrap_servers=bootstrap,
            registry=self.registry,
            tracer_provider=make_tracer_provider("renewal-test"),
            retry=RetryPolicy(),
            security=KafkaSecuritySettings(),
            renewal=self.renewal,
            request_timeout_ms=2000,
        )
        self.confirmed: dict[str, list[int]] = collections.defaultdict(list)
        self.confirmed_at: dict[str, list[float]] = collections.defaultdict(list)
        self.failures: collections.Counter[str] = collections.Counter()

    async def publish(self, key: str, seq: int) -> bool:
        try:
            await self.broker.publish(f"{key}:{seq}".encode(), topic=self.topic, key=key.encode())
        except Exception as exc:
            self.failures[type(exc).__name__] += 1
            return False
        self.confirmed[key].append(seq)
        self.confirmed_at[key].append(time.monotonic())
        return True

    async def keep_publishing(self, key: str, stop: asyncio.Event) -> None:
        """One key's events one after another, each retried until confirmed (as the relay)."""
        seq = 0
        while not stop.is_set():
            if await self.publish(key, seq):
                seq += 1
            else:
                await asyncio.sleep(0.2)

    def renewals(self) -> float:
        value = self.registry.get_sample_value(
            "kefu_kafka_producer_renewals_total", {"service": "renewal-test"}
        )
        return value or 0.0


@pytest.fixture
async def publisher(faults: LocalInfra) -> AsyncIterator[Publisher]:
    bootstrap = faults.endpoints.kafka_bootstrap
    topic = f"renewal-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    publisher = Publisher(bootstrap, topic)
    await publisher.broker.start()
    try:
        yield publisher
    finally:
        await publisher.broker.stop()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()


async def read_topic(bootstrap: str, topic: str) -> dict[str, list[int]]:
    """Every record on the topic, as each key's sequence numbers in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        seen: dict[str, list[int]] = collections.defaultdict(list)
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    key, seq = record.value.decode().split(":")
                    seen[key].append(int(seq))
        return seen
    finally:
        await consumer.stop()


async def test_publishing_resumes_on_every_partition_after_a_broker_restart(
    faults: LocalInfra, publisher: Publisher
) -> None:
    stop = asyncio.Event()
    keys = [f"key-{i}" for i in range(KEYS)]
    tasks = [asyncio.create_task(publisher.keep_publishing(k, stop)) for k in keys]
    await asyncio.sleep(1.0)
    assert all(publisher.confirmed[k] for k in keys)

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, stop_component, faults, "kafka")
    await asyncio.sleep(5.0)  # well past the 2 s request timeout: pending batches expire
    await loop.run_in_executor(None, bring_up, faults)
    back = time.monotonic()
    deadline = back + RESUME_BOUND_SECONDS
    while time.monotonic() < deadline:
        if all(any(t > back for t in publisher.confirmed_at[k]) for k in keys):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # and it keeps going
    stop.set()
    await asyncio.gather(*tasks)

    print(
        f"\nrenewals {publisher.renewals():.0f}; failed publishes {dict(publisher.failures)}; "
        f"confirmed {sum(len(v) for v in publisher.confirmed.values())}"
    )
    resumed = {k: any(t > back for t in publisher.confirmed_at[k]) for k in keys}
    assert all(resumed.values()), f"keys never confirmed again after the restart: {resumed}"
    assert publisher.renewal.healthy

    on_topic = await read_topic(faults.endpoints.kafka_bootstrap, publisher.topic)
    for key in keys:
        assert set(publisher.confirmed[key]) <= set(on_topic[key]), f"{key}: confirmed, lost"
        # Order per key: a retried event may repeat (at least once), never overtake a later one.
        first_seen = list(dict.fromkeys(on_topic[key]))
        assert first_seen == sorted(first_seen), f"{key} out of order: {first_seen}"


async def test_a_producer_the_broker_refuses_is_replaced_once_and_publishing_goes_on(
    publisher: Publisher,
) -> None:
    """aiokafka's defect without the restart: a sequence number consumed by a batch that was
    never sent. The broker's refusal is real; the kernel answers it with one new producer."""
    await publisher.publish("key-0", 0)
    broken = publisher.renewal.current()
    assert broken is not None
    tp = TopicPartition(publisher.topic, _partition_of(broken, publisher.topic, b"key-0"))
    broken._txn_manager.increment_sequence_number(tp, 1)

    results = await asyncio.gather(*(publisher.publish("key-0", 1) for _ in range(3)))
    assert results == [False, False, False]
    assert publisher.failures["OutOfOrderSequenceNumber"] >= 1

    assert await publisher.publish("key-0", 1)
    assert publisher.renewal.current() is not broken
    assert publisher.renewals() == 1  # three publishes saw it, one new producer
    assert broken._closed


def _partition_of(producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
    partitions = producer._metadata.partitions_for_topic(topic)
    assert partitions
    return int(producer._partitioner(key, sorted(partitions), sorted(partitions)))
