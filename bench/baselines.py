"""Baselines on the same broker and store, with the same payloads and documents as kefu's run.

- ``raw_kafka``: aiokafka produce (unconfirmed sends, futures awaited) and consume of the inbound
  envelopes, concurrently: the broker's ceiling for this payload.
- ``raw_mongo``: PyMongo async ``insert_many`` of the inquiry documents as the service writes
  them, and single-document round trips (one in flight) for the per-operation floor.
- ``faststream_anchor``: FastStream's documented published method (``@subscriber`` +
  ``@publisher``: consume one, publish one with confirmation, one in flight).
- ``raw_same_io``: a hand-written aiokafka + PyMongo pipeline doing the I/O kefu's contract
  needs per inbound message, batched: consume it, insert the inquiry and customer documents,
  produce the 4 inquiry events and the notification request; then consume the request, insert the
  delivery and customer documents, produce ``notification.sent``. What kefu would do with no
  framework, no outbox scan, no compare-and-set reads and no per-message round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker
from pymongo import AsyncMongoClient

from bench.payloads import Shapes
from bench.procs import create_topics

PARTITIONS = 4


def window_rate(stamps: Sequence[float]) -> float:
    """Sustained rate: completions per second between the 10th and 90th percentile completion,
    which leaves out the ramp-up and the tail of a burst."""
    n = len(stamps)
    if n < 10:
        return 0.0
    ordered = sorted(stamps)
    lo, hi = int(n * 0.1), int(n * 0.9) - 1
    span = ordered[hi] - ordered[lo]
    return (hi - lo) / span if span > 0 else 0.0


async def _assigned_consumer(bootstrap: str, topic: str, **kwargs: Any) -> AIOKafkaConsumer:
    """A consumer of every partition of ``topic`` from the beginning, no group, ready now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **kwargs)
    await consumer.start()
    partitions = consumer.partitions_for_topic(topic)
    while not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # What kefu's broker uses: idempotent, acks from all in-sync replicas.
    return AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")


async def _send_all(
    producer: AIOKafkaProducer, topic: str, items: Sequence[tuple[bytes, bytes]]
) -> None:
    """Unconfirmed sends, then await every delivery future: the broker sees batches."""
    futures = [await producer.send(topic, value, key=key) for key, value in items]
    await asyncio.gather(*futures)


async def _collect(
    consumer: AIOKafkaConsumer, expect: int, timeout: float, stamps: list[float]
) -> None:
    """Record the broker timestamp (CreateTime, s) of each record until ``expect`` arrived."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(stamps) < expect and loop.time() < deadline:
        batch = await consumer.getmany(timeout_ms=100, max_records=5000)
        for records in batch.values():
            stamps.extend(r.timestamp / 1000 for r in records)


async def raw_kafka(
    bootstrap: str, prefix: str, items: Sequence[tuple[bytes, bytes]], timeout: float = 60.0
) -> dict[str, Any]:
    topic = f"{prefix}raw.kafka"
    await create_topics(bootstrap, {topic: PARTITIONS})
    consumer = await _assigned_consumer(bootstrap, topic, max_partition_fetch_bytes=4 << 20)
    producer = _producer(bootstrap)
    await producer.start()
    got = 0
    try:
        t0 = time.perf_counter()

        async def consume() -> float:
            nonlocal got
            while got < len(items):
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                got += sum(len(r) for r in batch.values())
                if time.perf_counter() - t0 > timeout:
                    break
            return time.perf_counter()

        consuming = asyncio.create_task(consume())
        await _send_all(producer, topic, items)
        t_produced = time.perf_counter()
        t_consumed = await consuming
    finally:
        await producer.stop()
        await consumer.stop()
    n = len(items)
    return {
        "messages": n,
        "consumed": got,
        "produce_per_s": round(n / (t_produced - t0), 1),
        "produce_consume_per_s": round(got / (t_consumed - t0), 1),
        "payload_bytes": len(items[0][1]),
    }


async def raw_mongo(
    uri: str, database: str, shapes: Shapes, count: int, single_ops: int = 300
) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    db = client[database]
    try:
        await db.drop_collection("raw_inquiries")
        await db.drop_collection("raw_single")
        collection = db["raw_inquiries"]
        docs = [shapes.inquiry_doc(f"raw-{i}") for i in range(count)]
        chunk = 500
        t0 = time.perf_counter()
        for i in range(0, count, chunk):
            await collection.insert_many(docs[i : i + chunk], ordered=False)
        insert_many_s = time.perf_counter() - t0

        # One document at a time, one in flight: what a load-decide-write costs per step.
        single = db["raw_single"]
        timings: dict[str, float] = {}
        t = time.perf_counter()
        for i in range(single_ops):
            await single.insert_one(shapes.inquiry_doc(f"one-{i}"))
        timings["insert_one"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(single_ops):
            await single.find_one({"_id": f"one-{i}"})
        timings["find_one_by_id"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(single_ops):
            await single.update_one(
                {"_id": f"one-{i}", "version": 1}, {"$set": {"version": 2, "outbox": []}}
            )
        timings["update_one_cas"] = time.perf_counter() - t
        await db.drop_collection("raw_inquiries")
        await db.drop_collection("raw_single")
    finally:
        await client.close()
    return {
        "documents": count,
        "insert_many_docs_per_s": round(count / insert_many_s, 1),
        "single_op_ms": {k: round(v / single_ops * 1000, 3) for k, v in timings.items()},
    }


async def faststream_anchor(
    bootstrap: str, prefix: str, items: Sequence[tuple[bytes, bytes]], timeout: float = 60.0
) -> dict[str, Any]:
    """FastStream's published method, one message in flight, confirmed publishes."""
    source, sink = f"{prefix}fs.in", f"{prefix}fs.out"
    await create_topics(bootstrap, {source: PARTITIONS, sink: PARTITIONS})
    producer = _producer(bootstrap)
    await producer.start()
    try:
        await _send_all(producer, source, items)
    finally:
        await producer.stop()

    # Logging off: FastStream logs two lines per message by default (kefu turns them off too).
    broker = KafkaBroker(bootstrap, enable_idempotence=True, acks="all", logger=None)

    @broker.subscriber(source, group_id=f"{prefix}fs", auto_offset_reset="earliest")
    @broker.publisher(sink)
    async def relay(body: dict[str, Any]) -> dict[str, Any]:
        return body

    consumer = await _assigned_consumer(bootstrap, sink)
    stamps: list[float] = []
    try:
        await broker.start()
        await _collect(consumer, len(items), timeout, stamps)
    finally:
        await broker.stop()
        await consumer.stop()
    return {"messages": len(items), "relayed": len(stamps), "per_s": round(window_rate(stamps), 1)}


async def raw_same_io(
    bootstrap: str,
    uri: str,
    database: str,
    prefix: str,
    items: Sequence[tuple[bytes, bytes]],
    shapes: Shapes,
    timeout: float = 60.0,
) -> dict[str, Any]:
    inbound, events = f"{prefix}rawio.in", f"{prefix}rawio.events"
    requests, sent = f"{prefix}rawio.requests", f"{prefix}rawio.sent"
    await create_topics(bootstrap, {t: PARTITIONS for t in (inbound, events, requests, sent)})
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    db = client[database]
    for name in ("rawio_inquiries", "rawio_customers", "rawio_deliveries", "rawio_ncustomers"):
        await db.drop_collection(name)
    producer = _producer(bootstrap)
    await producer.start()
    stage_a = await _assigned_consumer(bootstrap, inbound, max_partition_fetch_bytes=4 << 20)
    stage_b = await _assigned_consumer(bootstrap, requests, max_partition_fetch_bytes=4 << 20)
    collector = await _assigned_consumer(bootstrap, sent)
    *event_bodies, request_body = shapes.outbox_bodies

    async def intake() -> None:
        while True:
            batch = await stage_a.getmany(timeout_ms=50, max_records=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            keys = [r.key.decode() for r in records]
            await asyncio.gather(
                db["rawio_inquiries"].insert_many(
                    [shapes.inquiry_doc(f"inq-{k}") for k in keys], ordered=False
                ),
                db["rawio_customers"].insert_many(
                    [{**shapes.customer, "_id": k} for k in keys], ordered=False
                ),
            )
            futures = []
            for r in records:
                for body in event_bodies:
                    futures.append(await producer.send(events, body, key=r.key))
                futures.append(await producer.send(requests, request_body, key=r.key))
            await asyncio.gather(*futures)

    async def notify() -> None:
        while True:
            batch = await stage_b.getmany(timeout_ms=50, max_records=500)
            records = [r for rs in batch.values() for r in rs]
            if not records:
                continue
            keys = [r.key.decode() for r in records]
            await asyncio.gather(
                db["rawio_deliveries"].insert_many(
                    [{**shapes.delivery, "_id": f"{k}:bot"} for k in keys], ordered=False
                ),
                db["rawio_ncustomers"].insert_many(
                    [{"_id": k, "version": 1, "recent_sends": [time.time()]} for k in keys],
                    ordered=False,
                ),
            )
            futures = [await producer.send(sent, shapes.sent_body, key=r.key) for r in records]
            await asyncio.gather(*futures)

    stamps: list[float] = []
    workers = [asyncio.create_task(intake()), asyncio.create_task(notify())]
    try:
        await _send_all(producer, inbound, items)
        await _collect(collector, len(items), timeout, stamps)
    finally:
        for w in workers:
            w.cancel()
        for w in workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await w
        for consumer in (stage_a, stage_b, collector):
            await consumer.stop()
        await producer.stop()
        for name in ("rawio_inquiries", "rawio_customers", "rawio_deliveries", "rawio_ncustomers"):
            await db.drop_collection(name)
        await client.close()
    return {
        "messages": len(items),
        "completed": len(stamps),
        "per_s": round(window_rate(stamps), 1),
        "kafka_messages_per_input": len(shapes.outbox_bodies) + 3,
        "documents_per_input": 4,
    }
