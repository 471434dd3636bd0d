"""Consumer lag is measured from the broker: end offset minus the group's committed offset."""

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from kefu_shared.lag import ConsumerLagMonitor
from kefu_shared.testing import produce
from prometheus_client import CollectorRegistry, generate_latest


async def test_lag_is_what_the_group_has_not_committed_yet(
    kafka_bootstrap: str, unique: str
) -> None:
    topic, group = f"kefu.test.{unique}", f"g-{unique}"
    await produce(kafka_bootstrap, topic, [b"m%d" % i for i in range(10)], key=b"one-partition")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000, max_records=3)
        [(tp, records)] = list(batch.items())
        await consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, "")})
    finally:
        await consumer.stop()

    registry = CollectorRegistry()
    monitor = ConsumerLagMonitor(
        bootstrap_servers=kafka_bootstrap,
        groups=lambda: [group],
        registry=registry,
        service="lagdemo",
    )
    lag = await monitor.measure_once()
    assert lag == {(group, topic, tp.partition): 7}
    exported = generate_latest(registry).decode()
    assert (
        f'kefu_consumer_lag_messages{{group="{group}",partition="{tp.partition}",'
        f'service="lagdemo",topic="{topic}"}} 7.0'
    ) in exported
    assert isinstance(tp, TopicPartition)
