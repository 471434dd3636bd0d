"""Helpers for the inquiry tests: settings on the real servers, messages, reading the topics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kefu_inquiry.settings import InquirySettings
from kefu_shared import topics
from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.envelope import Envelope, new_id
from kefu_shared.testing import produce, read_topic

DATA = Path(__file__).parent / "data"


def make_settings(overrides: dict[str, Any], unique: str, **extra: Any) -> InquirySettings:
    values: dict[str, Any] = {
        **overrides,
        # Groups of their own: tests never share a consumer group (no cross-test rebalances).
        "consumer_group": f"kefu-inquiry-{unique}",
        "sla_scan_seconds": 0.2,
        "dispatch_scan_seconds": 0.5,
        **extra,
    }
    return InquirySettings(**values)


def message(
    content: str,
    *,
    customer_id: str = "cust-1",
    channel: str = "chat",
    message_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "message_id": message_id or new_id(),
        "channel": channel,
        "customer_id": customer_id,
        "customer_name": "王芳",
        "contact": {"phone": "13812345678", "email": "wang.fang@example.com"},
        "content": content,
        "sent_at": datetime.now(UTC).isoformat(),
        **extra,
    }


def envelope_bytes(body: dict[str, Any]) -> bytes:
    env = Envelope.wrap(CustomerMessage.model_validate(body), source="chat-adapter")
    return env.kafka_body()


async def send(bootstrap: str, settings: InquirySettings, body: dict[str, Any]) -> None:
    topic = settings.topic(topics.inbound_channel_topic(body["channel"]))
    await produce(bootstrap, topic, [envelope_bytes(body)], key=body["customer_id"].encode())


async def events(
    bootstrap: str, settings: InquirySettings, *, expect: int, timeout: float = 20.0, **match: Any
) -> list[dict[str, Any]]:
    """Envelopes on the inquiry events topic (as dicts), filtered by top-level or data fields."""
    got = await read_topic(
        bootstrap, settings.topic(topics.INQUIRY_EVENTS), expect=expect, timeout=timeout
    )
    out = [r.json() for r in got]
    return [e for e in out if all(e.get(k) == v or e["data"].get(k) == v for k, v in match.items())]


async def notifications(
    bootstrap: str, settings: InquirySettings, *, expect: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    got = await read_topic(
        bootstrap, settings.topic(topics.NOTIFICATION_REQUESTS), expect=expect, timeout=timeout
    )
    return [r.json() for r in got]


def labelled(name: str) -> list[dict[str, Any]]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
