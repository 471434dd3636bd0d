"""Plays one shop day against the running services, as one asyncio program.

Customers write on every channel, agents on two shifts work their queues, orders go through
their lifecycle, the marketplace posts reviews, the after-sales desk walks returns to their
end, and customers answer surveys. ``ShopDay.play`` returns when every planned step is done
and the services have drained, or at the time limit.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from kefu_shared.auth import KeyRing
from kefu_shared.envelope import Envelope

from kefu_local.agents import AgentFloor
from kefu_local.commerce import TOPIC as COMMERCE_TOPIC
from kefu_local.commerce import OrderBook, PlannedOrder, plan_orders
from kefu_local.desk import AftersalesDesk, DeskStats, answer_surveys, post_reviews
from kefu_local.simulator import PlannedMessage, ShopDay


@dataclass
class DayProgress:
    messages_planned: int = 0
    messages_sent: int = 0
    order_steps_planned: int = 0
    order_steps_sent: int = 0
    desk: DeskStats = field(default_factory=DeskStats)
    phase: str = "starting"


@dataclass(frozen=True)
class Urls:
    inquiry: str | None
    aftersales: str | None


class DemoDay:
    def __init__(
        self,
        *,
        bootstrap: str,
        urls: Urls,
        keyring: KeyRing,
        seed: int,
        size: int,
        topic_prefix: str = "",
        message_spread_seconds: float = 60.0,
    ) -> None:
        self._prefix = topic_prefix
        self._bootstrap = bootstrap
        self._urls = urls
        self._keyring = keyring
        self._seed = seed
        self._spread = message_spread_seconds
        self._customers = ShopDay(seed=seed, size=size)
        self.messages: list[PlannedMessage] = self._customers.customer_messages()
        languages = {m.envelope.subject: m.envelope.data["language"] for m in self.messages}
        self.orders: list[PlannedOrder] = plan_orders(
            seed=seed,
            count=max(size // 4, 12),
            customers=sorted(languages),
            languages=languages,
        )
        self.progress = DayProgress(
            messages_planned=len(self.messages),
            order_steps_planned=sum(len(o.steps) for o in self.orders),
        )
        self.floor = AgentFloor(urls.inquiry, seed=seed, keyring=keyring) if urls.inquiry else None
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def play(self, *, settle_seconds: float = 45.0) -> None:
        background = []
        if self.floor is not None:
            background.append(
                asyncio.create_task(self.floor.work(lambda: self._stopping, shift_change_after=45))
            )
        background.append(
            asyncio.create_task(
                answer_surveys(
                    self._bootstrap,
                    seed=self._seed,
                    stats=self.progress.desk,
                    should_stop=lambda: self._stopping,
                    topic_prefix=self._prefix,
                )
            )
        )
        desk = None
        if self._urls.aftersales:
            desk = AftersalesDesk(
                self._urls.aftersales,
                self._bootstrap,
                self._keyring,
                seed=self._seed,
                stats=self.progress.desk,
            )
            background.append(asyncio.create_task(self._desk_loop(desk)))
        try:
            self.progress.phase = "customers writing, orders flowing"
            await asyncio.gather(self._send_messages(), self._run_orders())
            delivered = [o.snapshot for o in self.orders if o.fate in ("paid", "refunded")]
            self.progress.phase = "reviews and returns"
            await post_reviews(
                self._bootstrap,
                delivered,
                seed=self._seed,
                stats=self.progress.desk,
                topic_prefix=self._prefix,
            )
            if desk is not None:
                await self._request_returns(desk, delivered)
            self.progress.phase = "agents and the desk finish their work"
            await asyncio.sleep(settle_seconds)
        finally:
            self._stopping = True
            await asyncio.gather(*background, return_exceptions=True)

    async def _send_messages(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            gap = self._spread / max(len(self.messages), 1)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, item in enumerate(self.messages):
                # On a schedule, not sleep after send: a slow send does not stretch the day.
                delay = start + i * gap - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await _send(producer, self._prefix + item.topic, item.sent_now())
                self.progress.messages_sent += 1
        finally:
            await producer.stop()

    async def _run_orders(self) -> None:
        book = OrderBook(self._seed)
        steps = sorted(
            ((at, i, kind) for i, o in enumerate(self.orders) for at, kind in o.steps),
            key=lambda s: s[0],
        )
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, enable_idempotence=True)
        await producer.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            for at, index, kind in steps:
                delay = start + at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                order = self.orders[index]
                await _send(producer, self._prefix + COMMERCE_TOPIC, book.event(order, kind))
                self.progress.order_steps_sent += 1
        finally:
            await producer.stop()

    async def _request_returns(self, desk: AftersalesDesk, delivered: list[dict[str, Any]]) -> None:
        rng = random.Random(self._seed * 23)
        async with httpx.AsyncClient(timeout=30.0) as client:
            for order in delivered:
                if rng.random() < 0.3:
                    await desk.request_return(client, order)

    async def _desk_loop(self, desk: AftersalesDesk) -> None:
        async with httpx.AsyncClient(timeout=30.0) as client:
            while not self._stopping:
                try:
                    await desk.answer_reviews(client)
                    await desk.received_parcels(client)
                    await desk.work_cases(client)
                except (httpx.HTTPError, KeyError, TypeError, ValueError):
                    self.progress.desk.errors += 1  # one bad answer costs one pass, not the desk
                await asyncio.sleep(1.5)


async def _send(producer: AIOKafkaProducer, topic: str, envelope: Envelope[Any]) -> None:
    headers = [(k, v.encode()) for k, v in envelope.kafka_headers().items()]
    await producer.send_and_wait(
        topic, envelope.kafka_body(), key=envelope.subject.encode(), headers=headers
    )
