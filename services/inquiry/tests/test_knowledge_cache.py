"""The knowledge base's article cache on the real store: one read per language and period
instead of one per message, this instance's edits visible at once, other instances' after the
period."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kefu_inquiry.adapters.mongo import ARTICLES, QUICK_REPLIES, KnowledgeBase
from kefu_inquiry.domain.knowledge import Article
from pymongo import AsyncMongoClient

pytestmark = pytest.mark.integration


def article(article_id: str, answer: str) -> Article:
    return Article(id=article_id, question="发货时间?", answer=answer, keywords=["发货"])


async def test_articles_are_read_once_per_period_and_own_edits_show_at_once(
    mongo_client: AsyncMongoClient[dict[str, Any]], unique: str
) -> None:
    db = mongo_client[f"kb_{unique}"]
    try:
        cached = KnowledgeBase(db[ARTICLES], db[QUICK_REPLIES], cache_seconds=0.5)
        other_instance = KnowledgeBase(db[ARTICLES], db[QUICK_REPLIES])
        await cached.put_article(article("a-1", "48 小时内发货"))
        assert [a.answer for a in await cached.articles("zh")] == ["48 小时内发货"]

        await other_instance.put_article(article("a-1", "24 小时内发货"))
        # Within the period this instance still answers from what it read...
        assert [a.answer for a in await cached.articles("zh")] == ["48 小时内发货"]
        await asyncio.sleep(0.6)
        # ...and after it, from the store.
        assert [a.answer for a in await cached.articles("zh")] == ["24 小时内发货"]

        await cached.put_article(article("a-2", "顺丰包邮"))
        assert {a.id for a in await cached.articles("zh")} == {"a-1", "a-2"}
        assert await cached.delete_article("a-1")
        assert [a.id for a in await cached.articles("zh")] == ["a-2"]
        assert await cached.articles("en") == []
    finally:
        await mongo_client.drop_database(db.name)
