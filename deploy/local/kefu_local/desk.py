"""The after-sales desk, the marketplace and the customers' survey answers in the demo.

- Customers ask to return or refund some delivered orders over the after-sales API; the desk
  (agents, the warehouse, a supervisor for exceptions) walks each case to its end.
- The marketplace posts reviews of delivered orders; agents answer most negative ones, a few
  are left to go overdue (their reviews are posted close to the 24 h reply deadline).
- Customers answer some of the satisfaction surveys they were sent.
Everything goes through public inputs: HTTP APIs and the marketplace and answers topics.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kefu_shared.auth import KeyRing, Role
from kefu_shared.contracts.aftersales import MarketplaceReview
from kefu_shared.contracts.feedback import Dimension, SurveyAnswerSubmitted
from kefu_shared.envelope import Envelope
from kefu_shared.topics import FEEDBACK_EVENTS, MARKETPLACE_REVIEWS, SURVEY_ANSWERS

REVIEW_TEXTS = {
    1: ("瓶子碎了，包装太差", "Bottle arrived broken, terrible packaging"),
    2: ("物流太慢了，等了一周", "Shipping was far too slow"),
    3: ("一般般吧", "It's okay"),
    4: ("不错，还会再买", "Good, will buy again"),
    5: ("正品，非常满意！", "Genuine and excellent!"),
}
DIMENSIONS = tuple(Dimension)


@dataclass
class DeskStats:
    cases_opened: int = 0
    cases_closed: int = 0
    reviews_posted: int = 0
    review_replies: int = 0
    surveys_answered: int = 0
    errors: int = 0


class AftersalesDesk:
    def __init__(
        self, url: str, bootstrap: str, keyring: KeyRing, *, seed: int, stats: DeskStats
    ) -> None:
        self._url = url
        self._bootstrap = bootstrap
        self._rng = random.Random(seed * 13 + 5)
        self._agent = {"Authorization": f"Bearer {keyring.issue('agent-3', Role.AGENT)}"}
        self._boss = {"Authorization": f"Bearer {keyring.issue('supervisor-1', Role.SUPERVISOR)}"}
        self._service = {"Authorization": f"Bearer {keyring.issue('shop', Role.SERVICE)}"}
        self.stats = stats
        self._open: set[str] = set()

    async def request_return(self, client: httpx.AsyncClient, order: dict[str, Any]) -> None:
        rng = self._rng
        kind, reason = rng.choice(
            [
                ("return", "damaged_in_transit"),
                ("return", "quality_problem"),
                ("refund_only", "wrong_item"),
                ("return", "changed_mind"),
                ("exchange", "not_as_described"),
            ]
        )
        line = order["lines"][0]
        body = {
            "customer_id": order["customer_id"],
            "order_id": order["order_id"],
            "kind": kind,
            "reason": reason,
            "lines": [{"sku": line["sku"], "quantity": 1}],
            "description": "瓶身有裂纹"
            if reason == "damaged_in_transit"
            else "not what I expected",
            "evidence": ["https://img.example.com/evidence/1.jpg"],
            "item_opened": reason == "changed_mind" and rng.random() < 0.5,
            "channel": "chat",
            "language": "zh",
            "contact": order.get("contact", {}),
            "request_id": f"ret-{order['order_id']}",
        }
        response = await client.post(f"{self._url}/cases", json=body, headers=self._service)
        if response.status_code in (200, 201):
            self._open.add(response.json()["id"])
            self.stats.cases_opened += 1
        else:
            self.stats.errors += 1

    async def work_cases(self, client: httpx.AsyncClient) -> None:
        for case_id in list(self._open):
            try:
                await self._advance(client, case_id)
            except httpx.HTTPError:
                self.stats.errors += 1

    async def _advance(self, client: httpx.AsyncClient, case_id: str) -> None:
        case = (await client.get(f"{self._url}/cases/{case_id}", headers=self._agent)).json()
        state, kind = case["state"], case["kind"]
        base = f"{self._url}/cases/{case_id}"
        step: tuple[str, dict[str, Any], dict[str, str]] | None = None
        if state == "under_review":
            verdict = "approved" if self._rng.random() < 0.8 else "rejected"
            step = ("decision", {"verdict": verdict, "reason": "checked photos"}, self._boss)
        elif state in ("approved", "awaiting_return_parcel") and kind in ("return", "exchange"):
            tracking = f"SF{self._rng.randrange(10**10):010d}"
            step = ("return-parcel", {"carrier": "sf", "tracking_number": tracking}, self._agent)
        elif state == "approved":  # refund only: no parcel comes back
            step = ("transitions", {"to": "refunded"}, self._agent)
        elif state == "received":
            body = {"to": "inspected", "inspection_passed": True, "inspection_result": "as told"}
            step = ("transitions", body, self._agent)
        elif state == "inspected":
            if kind == "exchange":
                tracking = f"YD{self._rng.randrange(10**10):010d}"
                body = {"to": "exchanged", "carrier": "yunda", "tracking_number": tracking}
            else:
                body = {"to": "refunded", "refund_reference": f"RF-{case_id}"}
            step = ("transitions", body, self._agent)
        elif state in ("refunded", "exchanged", "repaired", "rejected"):
            step = ("transitions", {"to": "closed", "note": "customer informed"}, self._agent)
        elif state == "closed":
            self._open.discard(case_id)
            self.stats.cases_closed += 1
            return
        if step is None:
            return
        action, body, headers = step
        body = {**body, "command_id": f"{case_id}-{state}-{action}"}
        response = await client.post(f"{base}/{action}", json=body, headers=headers)
        if response.status_code >= 400:
            self.stats.errors += 1
            self._open.discard(case_id)  # a case the desk cannot move is left to a human

    async def received_parcels(self, client: httpx.AsyncClient) -> None:
        """The warehouse scans returned parcels in."""
        for case_id in list(self._open):
            case = (await client.get(f"{self._url}/cases/{case_id}", headers=self._agent)).json()
            if case.get("state") == "awaiting_return_parcel" and case.get("return_tracking"):
                body = {"to": "received", "command_id": f"{case_id}-received"}
                await client.post(
                    f"{self._url}/cases/{case_id}/transitions", json=body, headers=self._agent
                )

    async def answer_reviews(self, client: httpx.AsyncClient) -> None:
        params: dict[str, str | int] = {
            "kind": "negative_review",
            "state": "awaiting_reply",
            "limit": 50,
        }
        response = await client.get(f"{self._url}/cases", params=params, headers=self._agent)
        if response.status_code != 200:
            return
        for case in response.json()["items"]:
            if self._rng.random() < 0.25:
                continue  # missed by the desk: this one goes overdue
            body = {
                "reply": "亲，非常抱歉给您带来不好的体验，已为您安排补发。",
                "explanation": "courier damage; packaging upgraded",
            }
            url = f"{self._url}/cases/{case['id']}/review-reply"
            if (await client.post(url, json=body, headers=self._agent)).status_code == 200:
                self.stats.review_replies += 1


async def post_reviews(
    bootstrap: str,
    delivered: list[dict[str, Any]],
    *,
    seed: int,
    stats: DeskStats,
    close_to_deadline: bool = True,
    topic_prefix: str = "",
) -> None:
    rng = random.Random(seed * 17 + 11)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for order in delivered:
            if rng.random() > 0.45:
                continue
            rating = rng.choices([1, 2, 3, 4, 5], weights=[12, 13, 15, 25, 35])[0]
            zh = order.get("language") == "zh-CN"
            posted = datetime.now(UTC)
            if close_to_deadline and rating <= 2:
                # Marketplaces deliver reviews late: this one is already near its 24 h deadline.
                posted -= timedelta(hours=24) - timedelta(seconds=45)
            review = MarketplaceReview(
                review_id=f"rv-{order['order_id']}",
                marketplace=order.get("marketplace") or "taobao",
                order_id=order["order_id"],
                customer_id=order["customer_id"],
                rating=rating,
                text=REVIEW_TEXTS[rating][0 if zh else 1],
                posted_at=posted,
                language="zh" if zh else "en",
            )
            env = Envelope.wrap(review, source="marketplace-adapter")
            headers = [(k, v.encode()) for k, v in env.kafka_headers().items()]
            await producer.send_and_wait(
                topic_prefix + MARKETPLACE_REVIEWS,
                env.kafka_body(),
                key=env.subject.encode(),
                headers=headers,
            )
            stats.reviews_posted += 1
    finally:
        await producer.stop()


async def answer_surveys(
    bootstrap: str,
    *,
    seed: int,
    stats: DeskStats,
    should_stop: Callable[[], bool],
    topic_prefix: str = "",
) -> None:
    """Customers answer about 85 % of the invitations they get (announced by survey.sent)."""
    rng = random.Random(seed * 19 + 7)
    consumer = AIOKafkaConsumer(
        topic_prefix + FEEDBACK_EVENTS,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await consumer.start()
    await producer.start()
    try:
        while not should_stop():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    if event.get("type") != "survey.sent" or rng.random() > 0.85:
                        continue
                    data = event["data"]
                    unhappy = data.get("kind") == "aftersales" and rng.random() < 0.35
                    overall = rng.choice([1, 2, 3]) if unhappy else rng.choice([3, 4, 5, 5])
                    ratings = {
                        d: max(1, min(5, overall + rng.choice([-1, 0, 0, 1]))) for d in DIMENSIONS
                    }
                    answer = SurveyAnswerSubmitted(
                        survey_id=data["survey_id"],
                        submission_id=f"ans-{data['survey_id']}",
                        overall=overall,
                        ratings=ratings,
                        comment="物流可以再快一点" if overall <= 3 else "服务很好",
                        collected_by="demo-customer",
                        answered_at=datetime.now(UTC),
                    )
                    env = Envelope.wrap(answer, source="survey-collector")
                    headers = [(k, v.encode()) for k, v in env.kafka_headers().items()]
                    await producer.send_and_wait(
                        topic_prefix + SURVEY_ANSWERS,
                        env.kafka_body(),
                        key=env.subject.encode(),
                        headers=headers,
                    )
                    stats.surveys_answered += 1
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
        await producer.stop()
