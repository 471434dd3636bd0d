"""One customer's journey across services, on the real broker: inquiry -> notifier.

A question arrives on the chat topic with a W3C trace context and a correlation id; the bot
answers it from the knowledge base; the notifier delivers the answer. Every message of the
journey, on every topic, carries the same correlation id and the same trace id, so an SRE can
follow it in logs and traces.
"""

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
from kefu_shared.testing import Received, produce, read_topic

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def trace_id(record: Received) -> str:
    return record.headers.get("traceparent", "").split("-")[1]


async def test_a_bot_answered_question_is_followed_by_one_trace_and_correlation_id(
    service_overrides: dict[str, Any], kafka_bootstrap: str, unique: str
) -> None:
    inquiry_settings = InquirySettings(
        **{**service_overrides, "mongodb_database": f"{service_overrides['mongodb_database']}_i"}
    )
    notifier_settings = NotifierSettings(
        **{**service_overrides, "mongodb_database": f"{service_overrides['mongodb_database']}_n"},
        dispatch_poll_seconds=0.2,
    )
    question = CustomerMessage(
        message_id=f"m-{unique}",
        channel="chat",
        customer_id="cust-journey",
        customer_name="Wang Fang",
        contact={"email": "wang.fang@example.com", "phone": "13812345678"},
        content="请问可以开发票吗？",
        language="zh",
        sent_at=datetime.now(UTC),
    )
    inbound = Envelope.wrap(question, source="channel-chat", correlation_id=f"journey-{unique}")

    async with (
        running(create_inquiry(inquiry_settings)) as inquiry,
        running(create_notifier(notifier_settings)),
    ):
        article = {
            "question": "如何开发票？",
            "answer": "在订单详情页点击“申请发票”，电子发票24小时内发到邮箱。",
            "keywords": ["发票"],
            "language": "zh",
            "category": "order",
        }
        assert (await inquiry.post("/knowledge-base/articles", json=article)).status_code == 201
        await produce(
            kafka_bootstrap,
            inquiry_settings.topic(topics.inbound_channel_topic("chat")),
            [inbound.kafka_body()],
            key=b"cust-journey",
            headers={**inbound.kafka_headers(), "traceparent": TRACEPARENT},
        )
        sent = await read_topic(
            kafka_bootstrap, notifier_settings.topic(topics.NOTIFIER_EVENTS), expect=1
        )

    inquiry_events = await read_topic(
        kafka_bootstrap, inquiry_settings.topic(topics.INQUIRY_EVENTS), expect=4
    )
    requests = await read_topic(
        kafka_bootstrap, inquiry_settings.topic(topics.NOTIFICATION_REQUESTS), expect=1
    )
    assert [r.json()["type"] for r in inquiry_events] == [
        "inquiry.received",
        "inquiry.classified",
        "inquiry.auto_answered",
        "inquiry.resolved",
    ]
    [request] = requests
    assert request.json()["data"]["purpose"] == "bot_answer"
    [delivered] = sent
    assert delivered.json()["type"] == "notification.sent"
    assert delivered.json()["data"]["customer_id"] == "cust-journey"

    journey = [*inquiry_events, request, delivered]
    assert {r.json()["correlation_id"] for r in journey} == {f"journey-{unique}"}
    assert [(r.json()["type"], trace_id(r)) for r in journey] == [
        (r.json()["type"], TRACE_ID) for r in journey
    ]
    # The causation chain: the request was caused by the customer's message.
    assert request.json()["causation_id"] == inbound.id
