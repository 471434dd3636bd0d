"""What the reliability runs send (customers' messages, orders' lifecycles) and how they read
what came out (every record of a topic, from the beginning, through broker restarts)."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from kefu_shared import topics
from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.contracts.orders import CommerceOrderEvent
from kefu_shared.envelope import Envelope

# -- customers' messages --

BOT_QUESTION = "请问可以开发票吗？"
BOT_ARTICLE = {
    "question": "如何开发票？",
    "answer": "在订单详情页点击“申请发票”，电子发票24小时内发到邮箱。",
    "keywords": ["发票"],
    "language": "zh",
    "category": "order",
}
QUESTIONS = (
    ("zh", "我的订单什么时候发货？"),
    ("zh", "这个商品有优惠券吗"),
    ("zh", "收到的酒瓶碎了，我要投诉"),
    ("zh", "我要退货，商品有质量问题，瓶盖漏酒"),
    ("zh", "这款酒多少度？有现货吗"),
    ("en", "Where is my parcel? It has been a week."),
    ("en", "Is the 1983 vintage in stock?"),
)
SPAM = "加微信 vx: promo88888 领红包 www.cheap-deals.example !!!"


@dataclass(frozen=True)
class Outbound:
    """One record to produce, and what it stands for."""

    topic: str  # unprefixed
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    kind: str = ""
    ref: str = ""  # the message id, order id... the record is about


@dataclass(frozen=True)
class InquiryCase:
    message_id: str
    customer_id: str
    channel: str
    kind: str  # question | bot | spam


def inquiry_messages(
    token: str, count: int, rng: random.Random
) -> list[tuple[InquiryCase, Outbound]]:
    """``count`` customers, one message each, on every channel: most are questions for an
    agent, about a fifth are answered by the bot (one notice each), a tenth are spam (one
    refusal each)."""
    out: list[tuple[InquiryCase, Outbound]] = []
    channels = [c.value for c in topics.Channel]
    now = datetime.now(UTC)
    for n in range(count):
        roll = rng.random()
        if roll < 0.2:
            kind, language, text = "bot", "zh", BOT_QUESTION
        elif roll < 0.3:
            kind, language, text = "spam", "zh", SPAM
        else:
            language, text = rng.choice(QUESTIONS)
            kind = "question"
        channel = rng.choice(channels)
        customer = f"c-{token}-{n}"
        message = CustomerMessage(
            message_id=f"m-{token}-{n}",
            channel=topics.Channel(channel),
            customer_id=customer,
            customer_name="王芳" if language == "zh" else "Amy Lee",
            contact={"email": f"{customer}@example.com", "phone": "13812345678"},
            content=text,
            language=language,
            sent_at=now - timedelta(seconds=rng.randint(0, 60)),
        )
        envelope = Envelope.wrap(message, source=f"channel-{channel}")
        case = InquiryCase(message.message_id, customer, channel, kind)
        out.append(
            (
                case,
                Outbound(
                    topics.inbound_channel_topic(channel),
                    customer.encode(),
                    envelope.kafka_body(),
                    {k: v.encode() for k, v in envelope.kafka_headers().items()},
                    kind=kind,
                    ref=message.message_id,
                ),
            )
        )
    return out


# -- orders --

LIFECYCLES = {
    # final status -> the steps the platform reports, in order
    "delivered": ("placed", "paid", "shipped", "delivered"),
    "cancelled": ("placed", "cancelled"),
    "refunded": ("placed", "paid", "refunded"),
}


@dataclass(frozen=True)
class OrderCase:
    order_id: str
    customer_id: str
    lifecycle: str  # a key of LIFECYCLES: the status the order must end in


def order_body(order_id: str, customer_id: str, base: datetime) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "customer_name": "王芳",
        "channel": "web",
        "language": "zh-CN",
        "contact": {"email": f"{customer_id}@example.com", "phone": "13812345678"},
        "lines": [
            {
                "sku": "JZ-1983",
                "name": "1983",
                "category": "liquor",
                "quantity": 2,
                "unit_price_cents": 19800,
                "catalogue_unit_price_cents": 19800,
            }
        ],
        "total_cents": 39600,
        "address": {
            "province": "浙江省",
            "city": "杭州市",
            "district": "西湖区",
            "street": "文三路 90 号 3 幢 501",
            "receiver": "王芳",
            "phone": "13812345678",
        },
        "placed_at": base.isoformat(),
    }


def order_steps(case: OrderCase, base: datetime) -> list[Outbound]:
    """The platform's events of one order, each carrying the whole order after the step."""
    body = order_body(case.order_id, case.customer_id, base)
    out: list[Outbound] = []
    for n, kind in enumerate(LIFECYCLES[case.lifecycle]):
        at = (base + timedelta(minutes=n)).isoformat()
        if kind == "paid":
            body["paid_at"] = at
        elif kind == "shipped":
            body.update(shipped_at=at, carrier="yunda", tracking_number=f"YD{case.order_id[-12:]}")
        elif kind == "delivered":
            body["delivered_at"] = at
        elif kind == "cancelled":
            body.update(cancelled_at=at, cancel_reason="customer changed mind")
        elif kind == "refunded":
            body.update(refunded_at=at, refund_id=f"R-{case.order_id}", refund_amount_cents=39600)
        event = CommerceOrderEvent.model_validate({**body, "kind": kind})
        envelope = Envelope.wrap(event, source="commerce-platform")
        out.append(
            Outbound(
                topics.COMMERCE_ORDERS,
                case.order_id.encode(),
                envelope.kafka_body(),
                {k: v.encode() for k, v in envelope.kafka_headers().items()},
                kind=kind,
                ref=case.order_id,
            )
        )
    return out


def orders(token: str, count: int, rng: random.Random) -> list[tuple[OrderCase, list[Outbound]]]:
    """``count`` orders: 70 % delivered, 15 % cancelled unpaid, 15 % paid and fully refunded."""
    base = datetime.now(UTC) - timedelta(minutes=30)
    out = []
    for n in range(count):
        roll = rng.random()
        lifecycle = "delivered" if roll < 0.7 else "cancelled" if roll < 0.85 else "refunded"
        case = OrderCase(f"O-{token}-{n}", f"oc-{token}-{n}", lifecycle)
        out.append((case, order_steps(case, base)))
    return out


def interleave(
    singles: list[Outbound], sequences: list[list[Outbound]], rng: random.Random
) -> list[Outbound]:
    """One stream of everything in a random order that keeps each sequence's own order."""
    queues = [list(s) for s in sequences if s] + [[s] for s in singles]
    stream: list[Outbound] = []
    heads = list(range(len(queues)))
    positions = [0] * len(queues)
    while heads:
        i = rng.randrange(len(heads))
        q = heads[i]
        stream.append(queues[q][positions[q]])
        positions[q] += 1
        if positions[q] == len(queues[q]):
            heads[i] = heads[-1]
            heads.pop()
    return stream


# -- producing --


@dataclass(frozen=True)
class Produced:
    record: Outbound
    topic: str  # full name
    partition: int
    offset: int


class Producer:
    """An idempotent producer that keeps trying through a broker restart: a record sent twice
    after an unclear failure is a redelivery, which the services must shrug off anyway."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self._bootstrap = bootstrap
        self._prefix = prefix
        self._producer: AIOKafkaProducer | None = None
        self.retries = 0

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            enable_idempotence=True,
            acks="all",
            max_request_size=2_000_000,
            request_timeout_ms=15000,
            linger_ms=5,
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self, records: list[Outbound], *, deadline_seconds: float = 300
    ) -> list[Produced]:
        """Send a batch; on a failure, wait and send the failed part again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_seconds
        done: dict[int, Produced] = {}
        while True:
            assert self._producer is not None
            pending = [(i, r) for i, r in enumerate(records) if i not in done]
            if not pending:
                return [done[i] for i in range(len(records))]
            futures = []
            for i, r in pending:
                try:
                    fut = await self._producer.send(
                        self._prefix + r.topic,
                        r.value,
                        key=r.key,
                        headers=list(r.headers.items()),
                    )
                except Exception:
                    fut = None
                futures.append((i, r, fut))
            failed = False
            for i, r, fut in futures:
                if fut is None:
                    failed = True
                    continue
                try:
                    meta: RecordMetadata = await fut
                except Exception:
                    failed = True
                    continue
                done[i] = Produced(r, meta.topic, meta.partition, meta.offset)
            if failed:
                self.retries += 1
                if loop.time() > deadline:
                    raise RuntimeError(f"could not produce {len(pending)} records in time")
                await asyncio.sleep(1.0)
                if self.retries % 5 == 0:
                    # After a broker restart an idempotent producer can be fenced for good
                    # (out-of-order sequence): a new one gets a new producer id.
                    await self.stop()
                    await self.start()


# -- reading --


@dataclass(frozen=True)
class Record:
    topic: str  # unprefixed
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    def envelope(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.value or b"")
        except ValueError:
            return None
        return body if isinstance(body, dict) else None


class TopicLog:
    """Everything that reached some topics, read from the beginning, kept in memory."""

    def __init__(self, bootstrap: str, prefix: str, names: Iterable[str]) -> None:
        self._bootstrap = bootstrap
        self._prefix = prefix
        self._names = list(names)
        self._consumer: AIOKafkaConsumer | None = None
        self.records: dict[str, list[Record]] = defaultdict(list)

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *[self._prefix + n for n in self._names],
            bootstrap_servers=self._bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            metadata_max_age_ms=2000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def poll(self, seconds: float = 1.0) -> int:
        """Read what arrives within ``seconds``; returns how many records came."""
        assert self._consumer is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        count = 0
        while True:
            left = until - loop.time()
            if left <= 0:
                return count
            batch = await self._consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                for r in records:
                    name = r.topic[len(self._prefix) :]
                    self.records[name].append(
                        Record(
                            topic=name,
                            partition=r.partition,
                            offset=r.offset,
                            key=r.key,
                            value=r.value,
                            headers={
                                k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                                for k, v in r.headers or ()
                            },
                        )
                    )
                    count += 1

    def envelopes(self, name: str) -> list[dict[str, Any]]:
        return [e for r in self.records.get(name, []) if (e := r.envelope()) is not None]
