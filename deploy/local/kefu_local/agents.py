"""Simulated agents on shifts, working their queues through the inquiry service's HTTP API."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from kefu_shared.auth import KeyRing, Role

# Simulated agents close a case once the conversation has been quiet this long.
RESOLVE_AFTER_QUIET_SECONDS = 8.0
# A customer back within this many seconds of a resolution is back about the same problem.
REOPEN_WITHIN = 60.0

CATEGORIES = ["product", "order", "payment", "logistics", "after_sales", "complaint"]

KNOWLEDGE_BASE = [
    {
        "question": "还有货吗",
        "answer": "您好，商品页面显示可购买即为有货，下单后48小时内发货。",
        "keywords": ["有货", "库存", "现货"],
        "language": "zh",
        "category": "product",
    },
    {
        "question": "Is it in stock?",
        "answer": "Hello! If the product page lets you buy, it is in stock; we ship within 48h.",
        "keywords": ["in stock", "stock", "available"],
        "language": "en",
        "category": "product",
    },
]
QUICK_REPLIES = [
    {"title": "checking", "text": "您好，我马上为您查询，请稍等。", "language": "zh"},
    {"title": "checking", "text": "Hello, let me check that for you right away.", "language": "en"},
]


@dataclass(frozen=True)
class AgentPlan:
    agent_id: str
    level: str
    languages: tuple[str, ...]
    shift: int  # 0: morning, 1: evening


def roster(seed: int) -> list[AgentPlan]:
    rng = random.Random(seed)
    plans = []
    for i in range(6):
        languages = ("zh", "en") if i % 2 == 0 else (rng.choice(["zh", "en"]),)
        plans.append(AgentPlan(f"agent-{i + 1}", "agent", languages, shift=i % 2))
    plans.append(AgentPlan("senior-1", "senior", ("zh", "en"), shift=0))
    plans.append(AgentPlan("senior-2", "senior", ("zh", "en"), shift=1))
    return plans


@dataclass
class AgentStats:
    replies: int = 0
    resolved: int = 0
    transfers: int = 0
    escalations: int = 0
    reopened: int = 0
    errors: int = 0


class AgentFloor:
    """Registers agents, seeds the knowledge base, then works the queues until told to stop."""

    def __init__(self, inquiry_url: str, *, seed: int, keyring: KeyRing) -> None:
        self._url = inquiry_url
        self._keyring = keyring
        self._rng = random.Random(seed)
        self._plans = roster(seed)
        self.stats = AgentStats()
        self._quick: dict[str, str] = {}
        # customer -> the inquiry an agent last resolved for them, until it is reopened
        self._resolved_for: dict[str, tuple[str, float]] = {}

    def _as(self, subject: str, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._keyring.issue(subject, role)}"}

    async def prepare(self, client: httpx.AsyncClient) -> None:
        client.headers.update(self._as("supervisor-demo", Role.SUPERVISOR))
        for article in KNOWLEDGE_BASE:
            await client.post(f"{self._url}/knowledge-base/articles", json=article)
        for reply in QUICK_REPLIES:
            created = (await client.post(f"{self._url}/quick-replies", json=reply)).json()
            self._quick[reply["language"]] = created["id"]
        await self.start_shift(client, 0)

    async def start_shift(self, client: httpx.AsyncClient, shift: int) -> None:
        for plan in self._plans:
            body = {
                "name": plan.agent_id,
                "categories": CATEGORIES,
                "languages": list(plan.languages),
                "level": plan.level,
                "on_duty": plan.shift == shift,
                "capacity": 8,
            }
            await client.put(f"{self._url}/agents/{plan.agent_id}", json=body)

    async def work(self, should_stop: Callable[[], bool], *, shift_change_after: float) -> None:
        async with httpx.AsyncClient(timeout=30.0) as client:
            await self.prepare(client)
            loop = asyncio.get_running_loop()
            change_at = loop.time() + shift_change_after
            shift = 0
            while not should_stop():
                if shift == 0 and loop.time() >= change_at:
                    shift = 1  # the evening shift takes over; queues move to who is on duty
                    await self.start_shift(client, 1)
                on_duty = [p for p in self._plans if p.shift == shift]
                results = await asyncio.gather(
                    *(self._work_queue(client, p) for p in on_duty), return_exceptions=True
                )
                # A slow or refused call costs one pass, never the whole floor.
                self.stats.errors += sum(isinstance(r, Exception) for r in results)
                await asyncio.sleep(0.5)

    async def _work_queue(self, client: httpx.AsyncClient, plan: AgentPlan) -> None:
        role = Role.SENIOR_AGENT if plan.level == "senior" else Role.AGENT
        headers = self._as(plan.agent_id, role)
        try:
            queue = (
                await client.get(f"{self._url}/agents/{plan.agent_id}/queue", headers=headers)
            ).json()
        except httpx.HTTPError:
            self.stats.errors += 1
            return
        for inquiry in queue[:3]:
            await self._handle(client, plan, inquiry, headers)

    async def _reply(
        self,
        client: httpx.AsyncClient,
        plan: AgentPlan,
        inquiry: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        body: dict[str, Any] = {"agent_id": plan.agent_id}
        quick = self._quick.get(inquiry["language"])
        if quick and not inquiry.get("first_response_at") and self._rng.random() < 0.5:
            body["quick_reply_id"] = quick
        else:
            body["text"] = _free_text(inquiry)
        url = f"{self._url}/inquiries/{inquiry['id']}/replies"
        if (await client.post(url, json=body, headers=headers)).status_code == 200:
            self.stats.replies += 1

    def _colleague(self, plan: AgentPlan, language: str) -> str | None:
        """An on-duty agent of the same level who speaks the customer's language."""
        others = [
            p.agent_id
            for p in self._plans
            if p.agent_id != plan.agent_id
            and p.shift == plan.shift
            and p.level == plan.level
            and language in p.languages
        ]
        return self._rng.choice(others) if others else None

    async def _handle(
        self,
        client: httpx.AsyncClient,
        plan: AgentPlan,
        inquiry: dict[str, Any],
        headers: dict[str, str],
    ) -> None:
        rng = self._rng
        base = f"{self._url}/inquiries/{inquiry['id']}"

        async def act(action: str, body: dict[str, Any]) -> bool:
            response = await client.post(f"{base}/{action}", json=body, headers=headers)
            return response.status_code == 200

        try:
            if inquiry["status"] != "assigned":
                return
            messages = inquiry.get("messages") or []
            customer_waiting = bool(messages) and messages[-1].get("author") == "customer"
            previous, resolved_at = self._resolved_for.pop(inquiry["customer_id"], ("", 0.0))
            loop_time = asyncio.get_running_loop().time()
            if previous not in ("", inquiry["id"]) and loop_time - resolved_at < REOPEN_WITHIN:
                # The customer is back soon after: the earlier case was not really solved, so
                # it is reopened and counts against first-contact resolution.
                url = f"{self._url}/inquiries/{previous}/reopen"
                body = {"agent_id": plan.agent_id, "reason": "customer came back"}
                if (await client.post(url, json=body, headers=headers)).status_code == 200:
                    self.stats.reopened += 1
            if not inquiry.get("first_response_at") or customer_waiting:
                # The first reply stops the first-response clock; a reply to a follow-up stops
                # the next-response clock (DOMAIN.md 3), so both show up in the report.
                if _quiet_for(messages) < _reading_seconds(inquiry["id"]):
                    return  # still reading the conversation and typing
                await self._reply(client, plan, inquiry, headers)
                return
            if _quiet_for(messages) < RESOLVE_AFTER_QUIET_SECONDS:
                return  # give the customer a moment to write back before closing the case
            roll = rng.random()
            if plan.level == "agent" and (
                roll < 0.08 or (inquiry["category"] == "complaint" and roll < 0.5)
            ):
                reason = "complaint" if inquiry["category"] == "complaint" else "asks for a senior"
                body = {"agent_id": plan.agent_id, "to": "senior", "reason": reason}
                if await act("escalate", body):
                    self.stats.escalations += 1
                return
            if inquiry["category"] == "logistics" and roll < 0.25:
                body = {"agent_id": plan.agent_id, "to": "logistics", "reason": "lost parcel?"}
                if await act("escalate", body):
                    self.stats.escalations += 1
                return
            if roll < 0.22:
                colleague = self._colleague(plan, inquiry["language"])
                if colleague is not None:
                    body = {
                        "agent_id": plan.agent_id,
                        "to_agent_id": colleague,
                        "reason": "end of my queue slot",
                    }
                    if await act("transfer", body):
                        self.stats.transfers += 1
                    return
            if await act("resolve", {"agent_id": plan.agent_id}):
                self.stats.resolved += 1
                now = asyncio.get_running_loop().time()
                self._resolved_for[inquiry["customer_id"]] = (inquiry["id"], now)
        except httpx.HTTPError:
            self.stats.errors += 1


def _reading_seconds(inquiry_id: str) -> float:
    """How long an agent takes to read and type, 1 to 7 s: the same for a case on every run."""
    return 1.0 + (zlib.crc32(inquiry_id.encode()) % 600) / 100


def _quiet_for(messages: list[dict[str, Any]]) -> float:
    """Seconds since the last message in the conversation."""
    if not messages:
        return float("inf")
    last = datetime.fromisoformat(str(messages[-1]["sent_at"]))
    return (datetime.now(UTC) - last).total_seconds()


def _free_text(inquiry: dict[str, Any]) -> str:
    if inquiry.get("language") == "en":
        return "Thanks for waiting: I have looked into it and it is sorted. Anything else?"
    return "亲，让您久等了，已经为您处理好了，还有其他问题吗？"
