"""The outside subscriber validates a real customer journey's events against the schemas."""

from datetime import UTC, datetime
from typing import Any

from kefu_inquiry.bootstrap import create_app as create_inquiry
from kefu_inquiry.settings import InquirySettings
from kefu_local.pytest_plugin import running
from kefu_notifier.bootstrap import create_app as create_notifier
from kefu_notifier.settings import NotifierSettings
from kefu_shared import topics
from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.envelope import Envelope
from kefu_shared.testing import produce, read_topic

from examples.event_subscriber import check, consume, load_validators


async def test_a_journeys_events_all_validate_against_the_published_schemas(
    service_overrides: dict[str, Any], kafka_bootstrap: str
) -> None:
    db = service_overrides["mongodb_database"]
    inquiry_settings = InquirySettings(**{**service_overrides, "mongodb_database": f"{db}_i"})
    notifier_settings = NotifierSettings(
        **{**service_overrides, "mongodb_database": f"{db}_n"}, dispatch_poll_seconds=0.2
    )
    messages = [
        ("c-1", "chat", "Is the Maotai 53% still in stock?", "en"),
        ("c-2", "email", "刷单刷信誉，加微信 vx123456，日赚五百", "zh"),
        ("c-3", "marketplace", "订单SO123456的快递三天没更新了", "zh"),
    ]
    async with (
        running(create_inquiry(inquiry_settings)) as inquiry,
        running(create_notifier(notifier_settings)),
    ):
        article = {
            "question": "Is it in stock?",
            "answer": "If the product page lets you buy, it is in stock.",
            "keywords": ["in stock"],
            "language": "en",
            "category": "product",
        }
        assert (await inquiry.post("/knowledge-base/articles", json=article)).status_code == 201
        for customer, channel, text, language in messages:
            body = CustomerMessage(
                message_id=f"m-{customer}",
                channel=channel,
                customer_id=customer,
                contact={"email": f"{customer}@example.com", "phone": "13812345678"},
                content=text,
                language=language,
                sent_at=datetime.now(UTC),
            )
            env = Envelope.wrap(body, source=f"channel-{channel}")
            await produce(
                kafka_bootstrap,
                inquiry_settings.topic(topics.inbound_channel_topic(channel)),
                [env.kafka_body()],
                key=customer.encode(),
                headers=env.kafka_headers(),
            )
        # Two notifications: the bot's answer and the polite refusal to the advertiser.
        await read_topic(kafka_bootstrap, notifier_settings.topic(topics.NOTIFIER_EVENTS), expect=2)

    report = await consume(
        kafka_bootstrap,
        [
            inquiry_settings.topic(topics.INQUIRY_EVENTS),
            inquiry_settings.topic(topics.NOTIFICATION_REQUESTS),
            notifier_settings.topic(topics.NOTIFIER_EVENTS),
        ],
        expect=12,
        timeout=10,
    )
    assert report.invalid == []
    types = set(report.types())
    assert {
        "inquiry.received",
        "inquiry.classified",
        "inquiry.auto_answered",
        "inquiry.spam_filtered",
        "notification.requested",
        "notification.sent",
    } <= types


def test_a_record_that_breaks_its_contract_is_reported() -> None:
    validators = load_validators()
    body = (
        b'{"id": "e1", "type": "notification.sent", "version": 1, "source": "notifier",'
        b' "time": "2026-11-11T00:00:00Z", "subject": "k1", "correlation_id": "c",'
        b' "data": {"idempotency_key": "k1"}}'
    )
    headers = {"ce_type": "kefu.notification.sent.v1", "ce_id": "e1", "ce_subject": "k1"}
    problem = check(body, headers, validators)
    assert problem is not None
    assert "customer_id" in problem
    assert (
        check(body, {"ce_type": "kefu.nothing.v9"}, validators)
        == "no published schema for nothing.v9"
    )
