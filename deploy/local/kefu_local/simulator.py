"""A shop's day, played against the running services through their public inputs only.

Customers write on every channel in Chinese and English (channel topics, as the channel adapters
would publish); the randomness is seeded, so the same seed plays the same day.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from aiokafka import AIOKafkaProducer
from kefu_shared.contracts.inquiry import Contact, CustomerMessage
from kefu_shared.envelope import Envelope
from kefu_shared.topics import Channel, inbound_channel_topic

CHANNEL_WEIGHTS = {
    Channel.CHAT: 45,
    Channel.MARKETPLACE: 20,
    Channel.EMAIL: 15,
    Channel.SOCIAL: 10,
    Channel.PHONE: 10,
}
CATEGORY_WEIGHTS = {
    "product": 30,
    "order": 18,
    "payment": 8,
    "logistics": 16,
    "after_sales": 14,
    "complaint": 8,
    "spam": 6,
}
# A few customers paste their card number; kefu must redact it before storing anything.
CARD_NUMBERS = ("4111 1111 1111 1111", "5500-0000-0000-0004")


def load_script() -> dict[str, Any]:
    text = resources.files("kefu_local").joinpath("data/shop_day.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@dataclass(frozen=True)
class PlannedMessage:
    envelope: Envelope[Any]
    topic: str
    category: str

    def sent_now(self) -> Envelope[Any]:
        """The message as the customer sends it now: response times run from this moment."""
        now = datetime.now(UTC)
        data = {**self.envelope.data, "sent_at": now.isoformat()}
        return self.envelope.model_copy(update={"time": now, "data": data})


class ShopDay:
    """Plans the customers' messages of one day from a seed and a size."""

    def __init__(self, *, seed: int, size: int, start: datetime | None = None) -> None:
        self.seed = seed
        self.size = size
        self.start = start or datetime.now(UTC)
        self._rng = random.Random(seed)
        self._script = load_script()

    def customer_messages(self) -> list[PlannedMessage]:
        rng = self._rng
        customers = [f"cust-{self.seed}-{i:04d}" for i in range(max(self.size // 3, 1))]
        planned = []
        for i in range(self.size):
            customer = rng.choice(customers)
            channel = _weighted(rng, CHANNEL_WEIGHTS)
            category = _weighted(rng, CATEGORY_WEIGHTS)
            language = "zh" if int(customer.rsplit("-", 1)[1]) % 2 == 0 else "en"
            text = self._text(category, language)
            if category == "payment" and rng.random() < 0.3:
                text += f" card {rng.choice(CARD_NUMBERS)}"
            message = CustomerMessage(
                message_id=f"sim-{self.seed}-{i:06d}",
                channel=channel,
                customer_id=customer,
                customer_name=f"Customer {customer[-4:]}",
                contact=Contact(
                    phone=f"+86 138{rng.randrange(10**8):08d}",
                    email=f"{customer}@example.com",
                ),
                content=text,
                order_reference=None,
                language=language,
                sent_at=self.start + timedelta(seconds=i),
            )
            envelope = Envelope.wrap(message, source=f"channel-{channel.value}")
            planned.append(PlannedMessage(envelope, inbound_channel_topic(channel), category))
        return planned

    def _text(self, category: str, language: str) -> str:
        rng = self._rng
        phrases = self._script["messages"][category][language]
        suffix = "_zh" if language == "zh" else ""
        return str(rng.choice(phrases)).format(
            product=rng.choice(self._script["products" + suffix]),
            city=rng.choice(self._script["cities" + suffix]),
            order=f"SO{rng.randrange(10**6):06d}",
        )


def _weighted(rng: random.Random, weights: dict[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


async def publish_messages(
    bootstrap: str, planned: list[PlannedMessage], *, topic_prefix: str = ""
) -> None:
    """Publish as the channel adapters would: the envelope as JSON, keyed by customer."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        futures = []
        for item in planned:
            env = item.envelope
            headers = [(k, v.encode()) for k, v in env.kafka_headers().items()]
            futures.append(
                await producer.send(
                    topic_prefix + item.topic,
                    env.kafka_body(),
                    key=env.subject.encode(),
                    headers=headers,
                )
            )
        for future in futures:
            await future
    finally:
        await producer.stop()
