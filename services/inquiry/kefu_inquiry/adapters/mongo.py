"""Collections of the inquiry service and the queries the use cases need.

Aggregates that emit events (inquiries, the per-customer pointer) go through
``VersionedDocumentStore``; reference data without events (agents, articles, quick replies) are
plain documents replaced whole, so a PUT is idempotent.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from kefu_shared.documents import DueTimes
from kefu_shared.mongo import Collection, Document, IndexSpec
from kefu_shared.topics import Channel
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from kefu_inquiry.domain.inquiry import OPEN_STATUSES, Inquiry, Status
from kefu_inquiry.domain.knowledge import Article, QuickReply
from kefu_inquiry.domain.routing import Agent

INQUIRIES = "inquiries"
CUSTOMERS = "customers"
AGENTS = "agents"
ARTICLES = "kb_articles"
QUICK_REPLIES = "quick_replies"
# When each inquiry's next SLA alarm is due: the timer loop scans this, not every inquiry.
SLA_DUE = "sla_due"

INDEXES = [
    IndexSpec(INQUIRIES, [("status", ASCENDING), ("agent_id", ASCENDING)], name="status_agent"),
    IndexSpec(INQUIRIES, [("status", ASCENDING), ("queued_at", ASCENDING)], name="queue"),
    IndexSpec(INQUIRIES, [("sla_next_at", ASCENDING)], name="sla_next_at"),
    IndexSpec(INQUIRIES, [("customer_id", ASCENDING)], name="customer"),
    # One field, so FerretDB on PostgreSQL serves `{status: value}` from an index (the local
    # runner's GIN twin): the SLA reconcile reads the open inquiries only, whatever is stored.
    IndexSpec(INQUIRIES, [("status", ASCENDING)], name="status"),
    IndexSpec(SLA_DUE, [("at", ASCENDING)], name="at"),
]


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)  # a Channel in the state, its string in the document


def sla_due_times(db: AsyncDatabase[Document]) -> DueTimes:
    return DueTimes(
        db[SLA_DUE],
        db[INQUIRIES],
        due_at=lambda state: state.get("sla_next_at"),
        labels=lambda state: {"channel": _plain(state.get("channel"))},
        # Only an open inquiry has a running SLA clock (resolving stops them all), and one
        # equality per open status is served by the status index, where `sla_next_at != null`
        # read every inquiry ever stored (31 s at 100k, every 5 minutes).
        may_be_due=[{"status": status.value} for status in sorted(OPEN_STATUSES)],
        projection={"sla_next_at": 1, "channel": 1},
    )


async def create_indexes(db: AsyncDatabase[Document]) -> None:
    """One createIndexes command per index (see bootstrap: FerretDB and batched indexes)."""
    for spec in INDEXES:
        await db[spec.collection].create_indexes([spec.model()])


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in doc.items()
        if k not in ("_id", "version", "outbox", "outbox_pending", "applied")
    }


class InquiryQueries:
    """Read side over the inquiries collection (writes go through the store)."""

    def __init__(
        self,
        collection: Collection,
        opened: Callable[[dict[str, Any]], dict[str, Any]] = lambda state: state,
        due_times: DueTimes | None = None,
    ) -> None:
        self._c = collection
        self._due_times = due_times
        self._opened = opened  # decrypts sealed contact fields (adapters.encryption)

    async def get(self, inquiry_id: str) -> Inquiry | None:
        doc = await self._c.find_one({"_id": inquiry_id})
        return Inquiry.from_state(self._opened(_strip(doc))) if doc else None

    async def loads(self) -> Counter[str]:
        """Open assignments per agent. Counted from the inquiries themselves, so there is no
        second counter to keep in step (FerretDB has no transactions)."""
        cursor = self._c.find({"status": Status.ASSIGNED.value}, {"agent_id": 1})
        return Counter(d["agent_id"] for d in await cursor.to_list() if d.get("agent_id"))

    async def waiting(self, channels: Sequence[Channel], limit: int = 200) -> list[str]:
        cursor = self._c.find(
            {"status": Status.QUEUED.value, "channel": {"$in": [c.value for c in channels]}},
            {"_id": 1},
        ).sort("queued_at", ASCENDING)
        return [str(d["_id"]) for d in await cursor.limit(limit).to_list()]

    async def due(self, now: datetime, channels: Sequence[Channel], limit: int = 500) -> list[str]:
        served = {"channel": {"$in": [c.value for c in channels]}}
        if self._due_times is not None:
            return await self._due_times.due(now, limit, served)
        cursor = self._c.find(
            {"sla_next_at": {"$lte": now}, "channel": {"$in": [c.value for c in channels]}},
            {"_id": 1},
        )
        return [str(d["_id"]) for d in await cursor.limit(limit).to_list()]

    async def of_agent(self, agent_id: str) -> list[Inquiry]:
        cursor = self._c.find({"status": Status.ASSIGNED.value, "agent_id": agent_id})
        items = [Inquiry.from_state(self._opened(_strip(d))) for d in await cursor.to_list()]
        # Most urgent first: the one whose SLA fires soonest.
        return sorted(items, key=lambda i: (i.sla_next_at is None, i.sla_next_at or i.opened_at))

    async def of_customer(self, customer_id: str, limit: int = 50) -> list[Inquiry]:
        cursor = self._c.find({"customer_id": customer_id}).sort("opened_at", -1).limit(limit)
        return [Inquiry.from_state(self._opened(_strip(d))) for d in await cursor.to_list()]


class AgentDirectory:
    def __init__(self, collection: Collection) -> None:
        self._c = collection

    async def put(self, agent: Agent) -> None:
        await self._c.replace_one({"_id": agent.id}, agent.model_dump(mode="json"), upsert=True)

    async def get(self, agent_id: str) -> Agent | None:
        doc = await self._c.find_one({"_id": agent_id})
        return Agent.model_validate(_strip(doc)) if doc else None

    async def on_duty(self) -> list[Agent]:
        return [
            Agent.model_validate(_strip(d)) for d in await self._c.find({"on_duty": True}).to_list()
        ]


class KnowledgeBase:
    """Articles and quick replies. Every bot-answerable message reads the articles of its
    language, so they are kept for ``cache_seconds`` (parsed): one read per language and
    period instead of one per message. This process's own edits drop the cache at once."""

    def __init__(
        self, articles: Collection, quick_replies: Collection, *, cache_seconds: float = 0.0
    ) -> None:
        self._articles = articles
        self._replies = quick_replies
        self._cache_seconds = cache_seconds
        self._cached: dict[str | None, tuple[float, list[Article]]] = {}
        # Bumped by every edit: a read that overlapped one does not cache what it saw.
        self._edits = 0

    def _edited(self) -> None:
        self._edits += 1
        self._cached.clear()

    async def put_article(self, article: Article) -> None:
        self._edited()
        await self._articles.replace_one(
            {"_id": article.id}, article.model_dump(mode="json"), upsert=True
        )
        self._edited()

    async def article(self, article_id: str) -> Article | None:
        doc = await self._articles.find_one({"_id": article_id})
        return Article.model_validate(_strip(doc)) if doc else None

    async def articles(self, language: str | None = None) -> list[Article]:
        cached = self._cached.get(language)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return list(cached[1])
        read_at, edits = time.monotonic(), self._edits
        query: dict[str, Any] = {} if language is None else {"language": language}
        found = [
            Article.model_validate(_strip(d)) for d in await self._articles.find(query).to_list()
        ]
        if self._cache_seconds > 0 and edits == self._edits:
            self._cached[language] = (read_at, found)
        return list(found)

    async def delete_article(self, article_id: str) -> bool:
        self._edited()
        deleted = (await self._articles.delete_one({"_id": article_id})).deleted_count > 0
        self._edited()
        return deleted

    async def put_quick_reply(self, reply: QuickReply) -> None:
        await self._replies.replace_one(
            {"_id": reply.id}, reply.model_dump(mode="json"), upsert=True
        )

    async def quick_reply(self, reply_id: str) -> QuickReply | None:
        doc = await self._replies.find_one({"_id": reply_id})
        return QuickReply.model_validate(_strip(doc)) if doc else None

    async def quick_replies(self) -> list[QuickReply]:
        return [
            QuickReply.model_validate(_strip(d)) for d in await self._replies.find({}).to_list()
        ]

    async def delete_quick_reply(self, reply_id: str) -> bool:
        return (await self._replies.delete_one({"_id": reply_id})).deleted_count > 0
