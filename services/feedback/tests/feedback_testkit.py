"""Helpers for the feedback tests: settings on the real servers, other services' events, and a
known event history whose KPIs are computed by hand in ``test_feedback_kpis_on_real_servers``.

Times are UTC; the shop is at +08:00 and open 09:00-24:00 local (01:00-16:00 UTC).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from kefu_feedback.settings import FeedbackSettings
from kefu_shared.contracts import aftersales, inquiry, notifier, orders
from kefu_shared.envelope import Envelope, EventData, new_id
from kefu_shared.testing import read_topic


def at(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_settings(overrides: dict[str, Any], unique: str, **extra: Any) -> FeedbackSettings:
    values: dict[str, Any] = {
        **overrides,
        "consumer_group": f"kefu-feedback-{unique}",
        "quarterly_round_sample_size": 0,
        "round_scan_seconds": 0.3,
        "gauge_refresh_seconds": 0.5,
        **extra,
    }
    return FeedbackSettings(**values)


def policy_file(tmp_path: Path, **survey: Any) -> str:
    """The packaged policy with some survey rules changed."""
    from importlib import resources

    data = json.loads(
        resources.files("kefu_feedback").joinpath("data/feedback_policy.json").read_text()
    )
    data["survey"].update(survey)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data))
    return str(path)


@dataclass
class Published:
    """Envelopes to produce: (topic name without prefix, key, body)."""

    items: list[tuple[str, str, bytes]] = field(default_factory=list)

    def add(self, data: EventData, *, source: str, time: datetime | None = None) -> bytes:
        envelope = Envelope.wrap(data, source=source, time=time)
        body = envelope.kafka_body()
        self.items.append((data.topic, data.subject(), body))
        return body

    def again(self, index: int, *, new_envelope: bool = False) -> None:
        """Publish an earlier message again: the same envelope, or the same event re-wrapped."""
        topic, key, body = self.items[index]
        if new_envelope:
            doc = json.loads(body)
            doc["id"] = new_id()
            body = json.dumps(doc).encode()
        self.items.append((topic, key, body))

    def shuffled(self, seed: int) -> list[tuple[str, str, bytes]]:
        items = list(self.items)
        random.Random(seed).shuffle(items)
        return items


async def produce_all(
    bootstrap: str, settings: FeedbackSettings, items: list[tuple[str, str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, key, body in items:
            await producer.send_and_wait(settings.topic(topic), body, key=key.encode())
    finally:
        await producer.stop()


async def produce_raw(
    bootstrap: str, settings: FeedbackSettings, topic: str, key: str, body: bytes
) -> None:
    await produce_all(bootstrap, settings, [(topic, key, body)])


async def topic_json(
    bootstrap: str,
    settings: FeedbackSettings,
    topic: str,
    *,
    expect: int,
    timeout: float = 20.0,
    settle: float = 0.0,
) -> list[dict[str, Any]]:
    got = await read_topic(
        bootstrap, settings.topic(topic), expect=expect, timeout=timeout, settle=settle
    )
    return [r.json() for r in got]


# --- other services' events ---------------------------------------------------------------


def _inq(
    cls: type[inquiry.InquiryEvent],
    inquiry_id: str,
    customer: str,
    channel: str,
    category: str | None,
    when: datetime,
    **fields: Any,
) -> inquiry.InquiryEvent:
    return cls.model_validate(
        {
            "inquiry_id": inquiry_id,
            "customer_id": customer,
            "channel": channel,
            "category": category,
            "occurred_at": when,
            **fields,
        }
    )


@dataclass
class InquiryScript:
    """Events of one inquiry, in the inquiry service's words."""

    inquiry_id: str
    customer: str
    channel: str
    category: str | None
    language: str = "zh"
    events: list[inquiry.InquiryEvent] = field(default_factory=list)
    opened_at: datetime | None = None

    def _e(self, cls: type[inquiry.InquiryEvent], when: datetime, **fields: Any) -> None:
        category = (
            None if cls is inquiry.InquiryReceived and fields.get("opened") else self.category
        )
        self.events.append(
            _inq(cls, self.inquiry_id, self.customer, self.channel, category, when, **fields)
        )

    def opened(self, when: datetime, content: str) -> InquiryScript:
        self.opened_at = when
        self._e(
            inquiry.InquiryReceived,
            when,
            message_id=f"{self.inquiry_id}-m0",
            message_channel=self.channel,
            opened=True,
            content=content,
            language=self.language,
            sent_at=when,
        )
        self._e(
            inquiry.InquiryClassified,
            when + timedelta(seconds=1),
            confidence=0.9,
            language=self.language,
            needs_human=False,
        )
        return self

    def message(self, when: datetime, content: str = "还有一个问题") -> InquiryScript:
        self._e(
            inquiry.InquiryReceived,
            when,
            message_id=f"{self.inquiry_id}-m{len(self.events)}",
            message_channel=self.channel,
            opened=False,
            content=content,
            language=self.language,
            sent_at=when,
        )
        return self

    def reply(self, when: datetime, agent: str, seconds: float, *, first: bool) -> InquiryScript:
        self._e(
            inquiry.InquiryAgentReplied,
            when,
            agent_id=agent,
            reply_id=f"{self.inquiry_id}-r{len(self.events)}",
            first_response=first,
            response_seconds=seconds,
        )
        return self

    def resolved(self, when: datetime, agent: str | None, *, by_bot: bool = False) -> InquiryScript:
        assert self.opened_at is not None
        self._e(
            inquiry.InquiryResolved,
            when,
            agent_id=agent,
            by_bot=by_bot,
            opened_at=self.opened_at,
            resolution_seconds=(when - self.opened_at).total_seconds(),
        )
        return self

    def auto_answered(self, when: datetime, article: str) -> InquiryScript:
        self._e(
            inquiry.InquiryAutoAnswered,
            when,
            article_id=article,
            score=0.9,
            message_id=f"{self.inquiry_id}-m0",
        )
        return self

    def reopened(self, when: datetime, agent: str | None) -> InquiryScript:
        self._e(inquiry.InquiryReopened, when, agent_id=agent, reason="customer wrote again")
        return self

    def breached(self, when: datetime, sla: str, due: datetime, agent: str | None) -> InquiryScript:
        self._e(inquiry.InquirySlaBreached, when, sla=sla, due_at=due, agent_id=agent)
        return self


def spam(inquiry_id: str, when: datetime, channel: str = "social") -> inquiry.InquirySpamFiltered:
    return inquiry.InquirySpamFiltered(
        inquiry_id=inquiry_id,
        customer_id="spammer",
        channel=inquiry.Channel(channel),
        category=inquiry.Category.SPAM,
        occurred_at=when,
        message_id=f"{inquiry_id}-m0",
        confidence=0.99,
        refusal_sent=True,
    )


def attributed(
    order_id: str, customer: str, agent: str | None, paid: datetime, revision: int = 1
) -> orders.OrderAttributed:
    return orders.OrderAttributed.model_validate(
        {
            "order_id": order_id,
            "customer_id": customer,
            "channel": _sales_channel(),
            "occurred_at": paid,
            "agent_id": agent,
            "rule": "consulted_before_paying" if agent else "paid_before_contact",
            "revision": revision,
            "placed_at": paid - timedelta(minutes=5),
            "paid_at": paid,
            "total_cents": 19800,
            "currency": "CNY",
        }
    )


def _sales_channel() -> str:
    return next(iter(orders.SalesChannel)).value


def revoked(
    order_id: str, customer: str, agent: str, when: datetime
) -> orders.OrderAttributionRevoked:
    return orders.OrderAttributionRevoked.model_validate(
        {
            "order_id": order_id,
            "customer_id": customer,
            "channel": _sales_channel(),
            "occurred_at": when,
            "agent_id": agent,
            "rule": "consulted_before_paying",
            "reason": "refunded",
        }
    )


def refunded(
    order_id: str, customer: str, agent: str | None, when: datetime
) -> orders.OrderRefunded:
    return orders.OrderRefunded.model_validate(
        {
            "order_id": order_id,
            "customer_id": customer,
            "channel": _sales_channel(),
            "occurred_at": when,
            "refund_id": f"{order_id}-refund",
            "refund_amount_cents": 19800,
            "refunded_total_cents": 19800,
            "total_cents": 19800,
            "currency": "CNY",
            "full": True,
            "agent_id": agent,
            "refunded_at": when,
        }
    )


def lost(order_id: str, customer: str, agent: str | None, placed: datetime) -> orders.OrderLost:
    return orders.OrderLost.model_validate(
        {
            "order_id": order_id,
            "customer_id": customer,
            "channel": _sales_channel(),
            "occurred_at": placed + timedelta(minutes=20),
            "agent_id": agent,
            "placed_at": placed,
            "deadline_at": placed + timedelta(minutes=20),
            "total_cents": 9900,
            "currency": "CNY",
        }
    )


def recovered(
    order_id: str, customer: str, agent: str | None, paid: datetime
) -> orders.OrderLossRecovered:
    return orders.OrderLossRecovered.model_validate(
        {
            "order_id": order_id,
            "customer_id": customer,
            "channel": _sales_channel(),
            "occurred_at": paid,
            "agent_id": agent,
            "paid_at": paid,
        }
    )


def case_closed(
    case_id: str, customer: str, when: datetime, *, email: str | None = None, **extra: Any
) -> aftersales.AftersalesCaseClosed:
    return aftersales.AftersalesCaseClosed.model_validate(
        {
            "case_id": case_id,
            "kind": "return",
            "customer_id": customer,
            "order_id": "o-77",
            "state": "closed",
            "occurred_at": when,
            "resolution": "refunded",
            "actor_id": "as-agent-1",
            "channel": "email",
            "language": "en",
            "contact": {"email": email},
            "opened_at": when - timedelta(days=3),
            "closed_at": when,
            "resolution_seconds": 3 * 86400.0,
            **extra,
        }
    )


def delivery(kind: str, survey_id: str, customer: str, when: datetime, **extra: Any) -> EventData:
    common = {
        "idempotency_key": survey_id,
        "delivery_id": f"d-{survey_id}",
        "customer_id": customer,
        "purpose": "survey_invitation",
        "template": "survey_invitation",
        "requested_by": "feedback",
    }
    if kind == "sent":
        return notifier.NotificationSent.model_validate(
            {**common, "channel": "webhook", "attempts": 1, "sent_at": when, **extra}
        )
    if kind == "failed":
        return notifier.NotificationFailed.model_validate(
            {
                **common,
                "reason": "no_reachable_channel",
                "detail": "recipient: no address",
                "attempts": 0,
                "failed_at": when,
                **extra,
            }
        )
    return notifier.NotificationSuppressed.model_validate(
        {**common, "reason": "opted_out_purpose", "suppressed_at": when, **extra}
    )


# --- the known week of the KPI test (hand-computed values there) ----------------------------

GIFT_BOX = "这款酒有礼盒装吗？"


def the_week() -> tuple[list[InquiryScript], Published]:
    i1 = (
        InquiryScript("I1", "c1", "chat", "product")
        .opened(at(2, 2), GIFT_BOX)
        .reply(at(2, 2, 2), "A1", 120, first=True)
        .resolved(at(2, 2, 30), "A1")
    )
    # Written at 23:50 local, answered after the night: 80 min waited, 10 min of them open.
    i2 = (
        InquiryScript("I2", "c2", "chat", "order")
        .opened(at(2, 15, 50), "我的订单到哪里了 12345")
        .breached(at(2, 15, 51), "first_response", at(2, 15, 51), None)
        .reply(at(2, 17, 10), "A1", 4800, first=True)
        .message(at(2, 17, 20))
        .reply(at(2, 17, 25), "A1", 300, first=False)
        .resolved(at(2, 17, 30), "A1")
        .reopened(at(4, 3), "A1")
        .resolved(at(4, 4), "A1")
    )
    i3 = (
        InquiryScript("I3", "c3", "email", "after_sales", language="en")
        .opened(at(3, 3), "I want to return the bottle, it leaks")
        .reply(at(3, 5), "A2", 7200, first=True)
        .resolved(at(3, 6), "A2")
    )
    i4 = (
        InquiryScript("I4", "c4", "chat", "product")
        .opened(at(4, 4), "发货时间是多久？")
        .auto_answered(at(4, 4, 0, 1), "kb-shipping")
        .resolved(at(4, 4, 0, 1), None, by_bot=True)
    )
    # Served by A2 first, then by A1 who closes it; the next response is late (due 06:15).
    i5 = (
        InquiryScript("I5", "c5", "marketplace", "product")
        .opened(at(5, 6), "这款酒有礼盒装吗?")
        .reply(at(5, 6, 1, 30), "A2", 90, first=True)
        .message(at(5, 6, 10))
        .breached(at(5, 6, 15), "next_response", at(5, 6, 15), "A1")
        .reply(at(5, 6, 20), "A1", 600, first=False)
        .resolved(at(5, 6, 30), "A1")
    )
    # Nobody answered the complaint: both clocks breached, still open.
    i6 = (
        InquiryScript("I6", "c6", "phone", "complaint")
        .opened(at(6, 8), "投诉：快递员态度很差")
        .breached(at(6, 9), "first_response", at(6, 9), None)
        .breached(at(7, 8), "resolution", at(7, 8), None)
    )
    # Opened on Sunday 23:00 local, before the week; answered and resolved inside it.
    i7 = (
        InquiryScript("I7", "c2", "chat", "product")
        .opened(at(1, 15), "有没有53度的")
        .reply(at(1, 16, 30), "A2", 5400, first=True)
        .resolved(at(1, 17), "A2")
    )
    # After the week: must not count.
    i8 = InquiryScript("I8", "c7", "chat", "product").opened(at(9, 2), "还有货吗")
    scripts = [i1, i2, i3, i4, i5, i6, i7, i8]

    published = Published()
    for script in scripts:
        for event in script.events:
            published.add(event, source="inquiry", time=event.occurred_at)
    published.add(spam("S1", at(3, 9)), source="inquiry")
    for event in (
        attributed("O1", "c1", "A1", at(2, 3)),
        # Re-attributed to A2 (revision 2); the revisions arrive in either order.
        attributed("O2", "c5", "A2", at(3, 4), revision=2),
        attributed("O2", "c5", "A1", at(3, 4), revision=1),
        # Refunded: not a deal, whatever order the events come in.
        revoked("O3", "c2", "A2", at(6, 1)),
        refunded("O3", "c2", "A2", at(6, 1)),
        attributed("O3", "c2", "A2", at(4, 5)),
        attributed("O4", "c9", None, at(4, 6)),  # paid before any contact: nobody's
        attributed("O5", "c1", "A1", at(10, 3)),  # after the week
        lost("L1", "c8", "A1", at(5, 2)),
        lost("L2", "c8", "A2", at(6, 2)),
        recovered("L2", "c8", "A2", at(6, 3)),
        lost("L3", "c9", "A1", at(7, 5)),
    ):
        published.add(event, source="orders", time=event.occurred_at)
    # Redeliveries: the same envelopes, and the same events under new envelope ids.
    count = len(published.items)
    for index in range(0, count, 3):
        published.again(index)
    for index in range(1, count, 4):
        published.again(index, new_envelope=True)
    return scripts, published
