"""The knowledge base (frequent questions) and quick replies, and the bot's matching."""

from __future__ import annotations

import re
from collections.abc import Iterable

from kefu_shared.contracts.inquiry import Category
from pydantic import BaseModel, Field

# Inquiries of these kinds always go to a person: an upset or harmed customer deserves one.
NEVER_BOT_ANSWERED = frozenset({Category.COMPLAINT, Category.AFTER_SALES, Category.SPAM})


class ArticleDraft(BaseModel):
    question: str = Field(min_length=1, max_length=500)
    answer: str = Field(min_length=1, max_length=4000)
    keywords: list[str] = Field(min_length=1, max_length=30)
    language: str = Field(default="zh", pattern=r"^[a-z]{2}$")
    category: Category | None = None
    enabled: bool = True


class Article(ArticleDraft):
    id: str


class QuickReplyDraft(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=4000)
    language: str = Field(default="zh", pattern=r"^[a-z]{2}$")
    category: Category | None = None


class QuickReply(QuickReplyDraft):
    id: str


class Match(BaseModel):
    article: Article
    score: float
    matched: int


def _hits(keyword: str, text: str) -> bool:
    keyword = keyword.lower().strip()
    if not keyword:
        return False
    if re.search(r"[\u3400-\u9fff]", keyword):
        return keyword in text
    return re.search(r"(?<![a-z0-9])" + re.escape(keyword), text) is not None


def best_match(
    articles: Iterable[Article], text: str, language: str, category: Category | None
) -> Match | None:
    """The article whose keywords the message covers best (share of its keywords found).

    An article about another category is skipped: the classification already said what the
    question is about, and a keyword overlap across categories is how bots give silly answers.
    """
    lowered = text.lower()
    best: Match | None = None
    for article in articles:
        if not article.enabled or article.language != language:
            continue
        if article.category is not None and category is not None and article.category != category:
            continue
        matched = sum(1 for k in article.keywords if _hits(k, lowered))
        if matched == 0:
            continue
        score = matched / len(article.keywords)
        if best is None or (score, matched) > (best.score, best.matched):
            best = Match(article=article, score=round(score, 3), matched=matched)
    return best


def render_quick_reply(reply: QuickReply, customer_name: str, order_reference: str | None) -> str:
    """Quick replies may say {customer_name} and {order_reference}; unknown braces stay as is."""
    text = reply.text.replace("{customer_name}", customer_name or "")
    return text.replace("{order_reference}", order_reference or "")
