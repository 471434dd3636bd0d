"""What the benchmark sends and stores, built with the services' own contracts and domain code.

Every baseline uses exactly these bytes and documents, so a ratio compares the same work:
- the inbound message: a ``CustomerMessage`` envelope on the chat topic, keyed by customer id,
  that the seeded knowledge-base article answers (so the inquiry service asks the notifier to
  send a ``bot_answer``: the inquiry service requests no notification for a plain new message);
- the inquiry document as the inquiry service first writes it (state, outbox with the four
  inquiry events and the notification request, ``applied``), and as it looks once relayed;
- the outgoing messages (the five outbox bodies, and a ``notification.sent`` envelope).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kefu_inquiry import handlers
from kefu_inquiry.domain import inquiry as domain
from kefu_inquiry.domain.inquiry import IncomingMessage
from kefu_inquiry.domain.knowledge import Article, best_match
from kefu_inquiry.domain.rules_loader import default_classifier
from kefu_inquiry.settings import InquirySettings
from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.contracts.notifier import NotificationChannel, NotificationSent
from kefu_shared.envelope import Envelope, new_id
from kefu_shared.topics import Channel

QUESTION = "请问能开发票吗？"

ARTICLE: dict[str, Any] = {
    "question": "如何开发票？",
    "answer": "在订单详情页点击“申请发票”，电子发票24小时内发到邮箱。",
    "keywords": ["发票", "开"],
    "language": "zh",
    "category": "order",
}


def customer_message(seq: int, run: str) -> CustomerMessage:
    """One customer per message: the notifier's per-customer rate limit (5 an hour for a bot
    answer) never defers a benchmark notification, and keys spread over every partition."""
    return CustomerMessage(
        message_id=f"{run}-m{seq}",
        channel=Channel.CHAT,
        customer_id=f"{run}-c{seq}",
        customer_name="王芳",
        # Email only: the chat's preferred channel (app push) has no token, so the notifier
        # falls back to email, which has no provider here and so uses the log provider.
        contact={"email": f"c{seq}@example.com"},
        content=QUESTION,
        sent_at=datetime.now(UTC),
    )


def inbound(seq: int, run: str) -> tuple[bytes, bytes, str]:
    """(key, body, correlation id) of one inbound chat message."""
    message = customer_message(seq, run)
    correlation_id = f"{run}-k{seq}"
    envelope = Envelope.wrap(message, source="bench-chat-adapter", correlation_id=correlation_id)
    return message.customer_id.encode(), envelope.kafka_body(), correlation_id


@dataclass(frozen=True)
class Shapes:
    """One message's documents and outgoing bodies, as the services produce them."""

    inquiry_written: dict[str, Any]  # first insert: state + outbox (5 messages) + applied
    inquiry_relayed: dict[str, Any]  # after the relay: outbox emptied
    customer: dict[str, Any]  # the inquiry service's per-customer pointer
    outbox_bodies: list[bytes]  # 4 inquiry events + 1 notification request
    sent_body: bytes  # the notifier's notification.sent envelope
    delivery: dict[str, Any]  # an approximation of the notifier's delivery document

    def inquiry_doc(self, doc_id: str, *, relayed: bool = False) -> dict[str, Any]:
        doc = copy.copy(self.inquiry_relayed if relayed else self.inquiry_written)
        doc["_id"] = doc_id
        return doc


def shapes() -> Shapes:
    """Run the inquiry domain once on the benchmark's message to get the real shapes."""
    settings = InquirySettings(kafka_bootstrap_servers="-", mongodb_uri="mongodb://-")
    classifier = default_classifier()
    message = customer_message(0, "shape")
    incoming = IncomingMessage(
        message_id=message.message_id,
        channel=message.channel,
        customer_id=message.customer_id,
        customer_name=message.customer_name,
        contact=message.contact,
        content=message.content,
        order_reference=None,
        language=None,
        sent_at=message.sent_at,
    )
    classification = classifier.classify(incoming.content, None)
    article = Article(id=new_id(), **ARTICLE)
    answer = best_match(
        [article], incoming.content, classification.language, classification.category
    )
    now = datetime.now(UTC)
    inquiry_id = domain.inquiry_id_for(message.message_id)
    decision = domain.open_inquiry(
        inquiry_id,
        incoming,
        classification,
        answer,
        settings.sla_policy(),
        now,
        bot_min_score=settings.bot_min_score,
    )
    if not decision.notices:
        raise RuntimeError("the benchmark message is no longer answered by the bot")

    class _Deps:
        @staticmethod
        def topic(name: str) -> str:
            return name

    change = handlers._change(decision, _Deps(), handlers.Context(new_id(), new_id()))  # type: ignore[arg-type]
    outbox = [m.to_document() for m in change.events]
    written = {
        "version": 1,
        **change.state,
        "applied": [message.message_id],
        "outbox": outbox,
        "outbox_pending": True,
    }
    relayed = {**written, "version": 2, "outbox": [], "outbox_pending": False}
    customer = {
        "version": 2,
        "open_inquiry_id": None,
        "inquiry_ids": [inquiry_id],
        "applied": [],
        "outbox": [],
        "outbox_pending": False,
    }
    sent = NotificationSent(
        idempotency_key=f"{inquiry_id}:bot:1",
        delivery_id=new_id(),
        customer_id=message.customer_id,
        purpose="bot_answer",
        template="bot_answer",
        requested_by="inquiry",
        channel=NotificationChannel.EMAIL,
        attempts=1,
        sent_at=now,
        provider_message_id="log-x",
    )
    request = json.loads(change.events[-1].body)["data"]
    delivery = {
        "version": 4,
        "delivery_id": new_id(),
        "customer_id": message.customer_id,
        "purpose": "bot_answer",
        "template": "bot_answer",
        "language": request["language"],
        "requested_by": "inquiry",
        "correlation_id": new_id(),
        "request_message_id": new_id(),
        "routes": [{"channel": "email", "address": "c0@example.com"}],
        "content": {"subject": ARTICLE["question"], "body": ARTICLE["answer"] * 2},
        "status": "sent",
        "created_at": now,
        "updated_at": now,
        "next_attempt_at": None,
        "attempts": 1,
        "channel": "email",
        "sent_at": now,
        "applied": [new_id()],
        "outbox": [],
        "outbox_pending": False,
    }
    return Shapes(
        inquiry_written=written,
        inquiry_relayed=relayed,
        customer=customer,
        outbox_bodies=[m.body.encode() for m in change.events],
        sent_body=Envelope.wrap(sent, source="notifier").kafka_body(),
        delivery=delivery,
    )
