"""The envelope and its CloudEvents headers survive a trip through the real broker."""

from collections.abc import Callable
from typing import Any, ClassVar

from faststream.kafka import KafkaBroker
from kefu_shared.envelope import Envelope, EventData
from kefu_shared.testing import read_topic


class InquiryNoted(EventData):
    event_type: ClassVar[str] = "test.inquiry_noted"
    topic: ClassVar[str] = "unused"
    subject_field: ClassVar[str] = "inquiry_id"

    inquiry_id: str
    text: str


async def test_a_published_envelope_arrives_keyed_by_subject_with_cloudevents_headers(
    kafka_bootstrap: str, broker_factory: Callable[..., KafkaBroker], unique: str
) -> None:
    topic = f"kefu.test.{unique}"
    env = Envelope.wrap(
        InquiryNoted(inquiry_id="inq-7", text="还有货吗？"),
        source="inquiry",
        correlation_id="corr-7",
        causation_id="msg-6",
    )
    broker = broker_factory(f"k{unique}")
    async with broker:
        await broker.connect()
        await broker.publish(
            env.kafka_body(),
            topic=topic,
            key=env.subject.encode(),
            headers=env.kafka_headers(),
            correlation_id=env.correlation_id,
        )

    [received] = await read_topic(kafka_bootstrap, topic, expect=1)
    assert received.key == b"inq-7"
    assert received.headers["ce_id"] == env.id
    assert received.headers["ce_type"] == "kefu.test.inquiry_noted.v1"
    assert received.headers["ce_source"] == "/kefu/inquiry"
    assert received.headers["ce_subject"] == "inq-7"
    assert received.headers["causation_id"] == "msg-6"
    back = Envelope[dict[str, Any]].from_kafka_body(received.value)
    assert back.id == env.id
    assert back.correlation_id == "corr-7"
    assert back.payload(InquiryNoted).text == "还有货吗？"
