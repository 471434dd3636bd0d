"""The poison test: malformed and contract-breaking records mixed into every inbound topic.

Each poison record must reach the dead-letter topic of every service that consumes its topic,
with the reason and the original topic, partition and offset in headers, while the good
records around it are processed and no process dies.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kefu_local.infra import LocalInfra
from kefu_shared import topics
from kefu_shared.contracts.feedback import SURVEY_ANSWERS_TOPIC
from kefu_shared.envelope import new_id

from .fleet import Fleet, Log, delete_topics
from .traffic import Outbound, Produced, Producer, TopicLog, inquiry_messages, order_body

# Who consumes each inbound topic (and so must dead-letter what it cannot process).
CONSUMERS: dict[str, tuple[str, ...]] = {
    **{topics.inbound_channel_topic(c): ("inquiry",) for c in topics.Channel},
    topics.COMMERCE_ORDERS: ("orders", "aftersales"),
    topics.MARKETPLACE_REVIEWS: ("aftersales",),
    topics.NOTIFICATION_REQUESTS: ("notifier",),
    SURVEY_ANSWERS_TOPIC: ("feedback",),
}
NOW = datetime.now(UTC).isoformat()


def _envelope(type_: str, subject: str, data: Any, version: int = 1) -> bytes:
    return json.dumps(
        {
            "id": new_id(),
            "type": type_,
            "version": version,
            "source": "poison",
            "time": NOW,
            "subject": subject,
            "correlation_id": new_id(),
            "data": data,
        }
    ).encode()


def _valid_data(topic: str, n: int) -> tuple[str, str, dict[str, Any]]:
    """(type, subject, data) of a valid record for ``topic``; poison is made by breaking it."""
    if topic.startswith("kefu.inquiry.inbound."):
        channel = topic.rsplit(".", 1)[1]
        return (
            "inquiry.customer_message",
            f"pc-{n}",
            {
                "message_id": f"pm-{n}",
                "channel": channel,
                "customer_id": f"pc-{n}",
                "content": "我的订单什么时候发货？",
                "language": "zh",
                "sent_at": NOW,
            },
        )
    if topic == topics.COMMERCE_ORDERS:
        body = order_body(f"PO-{n}", f"pc-{n}", datetime.now(UTC))
        return "commerce.order_event", f"PO-{n}", {**body, "kind": "placed"}
    if topic == topics.MARKETPLACE_REVIEWS:
        return (
            "marketplace.review_posted",
            f"pr-{n}",
            {
                "review_id": f"pr-{n}",
                "marketplace": "taobao",
                "order_id": f"PO-{n}",
                "customer_id": f"pc-{n}",
                "rating": 1,
                "text": "太差了",
                "posted_at": NOW,
                "language": "zh",
            },
        )
    if topic == topics.NOTIFICATION_REQUESTS:
        return (
            "notification.requested",
            f"pc-{n}",
            {
                "idempotency_key": f"poison:{n}",
                "customer_id": f"pc-{n}",
                "purpose": "inquiry_acknowledgement",
                "template": "inquiry_acknowledgement",
                "parameters": {"inquiry_id": f"I-{n}"},
                "recipient": {"email": f"pc-{n}@example.com"},
                "requested_by": "poison",
            },
        )
    return (
        "survey.answer_submitted",
        f"survey-{n}",
        {
            "survey_id": f"survey-{n}",
            "submission_id": f"sub-{n}",
            "overall": 5,
            "collected_by": "phone_follow_up",
            "answered_at": NOW,
        },
    )


# Contract violations per topic: (name, change to the valid data). None removes the field.
VIOLATIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "inbound": [
        ("content_too_long", {"content": "好" * 4001}),
        ("content_blank", {"content": "   "}),
        ("naive_sent_at", {"sent_at": "2026-03-02T10:00:00"}),
        ("unknown_channel", {"channel": "fax"}),
        ("blank_customer", {"customer_id": " "}),
        ("no_message_id", {"message_id": None}),
    ],
    topics.COMMERCE_ORDERS: [
        ("unknown_kind", {"kind": "teleported"}),
        ("shipped_without_tracking", {"kind": "shipped", "shipped_at": NOW}),
        ("paid_without_paid_at", {"kind": "paid"}),
        ("marketplace_without_name", {"channel": "marketplace"}),
        ("negative_total", {"total_cents": -1}),
        ("no_lines", {"lines": []}),
        ("bad_order_id", {"order_id": "../etc/passwd"}),
    ],
    topics.MARKETPLACE_REVIEWS: [
        ("rating_six", {"rating": 6}),
        ("naive_posted_at", {"posted_at": "2026-03-02T10:00:00"}),
        ("no_review_id", {"review_id": None}),
    ],
    topics.NOTIFICATION_REQUESTS: [
        ("key_with_slash", {"idempotency_key": "a/b"}),
        ("unknown_purpose", {"purpose": "marketing_blast"}),
        ("unknown_language", {"language": "tlh"}),
        ("bad_email", {"recipient": {"email": "not-an-address"}}),
    ],
    SURVEY_ANSWERS_TOPIC: [
        ("overall_nine", {"overall": 9}),
        ("rating_zero", {"ratings": {"price": 0}}),
        ("unknown_survey", {}),  # valid, but no such survey was ever sent: refused by feedback
    ],
}

# Malformed whatever the topic: (name, value bytes or None).
MALFORMED: list[tuple[str, bytes | None]] = [
    ("empty", b""),
    ("binary", b"\x00\xff\xfe\x01garbage"),
    ("truncated_json", b'{"id": "x", "type": "inquiry.customer_message", "data": {'),
    ("json_array", b"[1, 2, 3]"),
    ("json_number", b"42"),
    ("json_null", b"null"),
    ("empty_object", b"{}"),
    ("invalid_utf8_in_json", b'{"id": "\xff\xfe", "data": {}}'),
    ("deeply_nested", b"[" * 20000 + b"]" * 20000),
    ("tombstone", None),
]


@dataclass(frozen=True)
class PoisonConfig:
    poison: int = 100
    good: int = 60
    huge_bytes: int = 900_000  # one record this large per run (Kafka's default limit is 1 MB)
    # One record just under the broker's limit (1,048,588 bytes per batch), sent last: its
    # dead letter (the same bytes plus the reason headers) no longer fits under that limit.
    at_limit_bytes: int = 1_048_000
    converge_seconds: float = 180.0
    seed: int = 13


@dataclass
class PoisonReport:
    counts: dict[str, int] = field(default_factory=dict)
    findings: dict[str, list[str]] = field(default_factory=dict)
    missing_by_kind: Counter[str] = field(default_factory=Counter)

    def problem(self, what: str, items: list[str]) -> None:
        if items:
            self.findings[what] = sorted(items)

    @property
    def problems(self) -> list[str]:
        return [f"{k}: {len(v)} (e.g. {v[:5]})" for k, v in self.findings.items()]

    def lines(self) -> list[str]:
        out = [f"  {k:<48} {v}" for k, v in self.counts.items()]
        out += [f"  PROBLEM {p}" for p in self.problems] or ["  problems: none"]
        return out


def poison_records(count: int, huge_bytes: int, rng: random.Random) -> list[Outbound]:
    """``count`` poison records over every inbound topic and every kind of breakage."""
    kinds: list[tuple[str, str]] = []  # (topic, kind)
    for topic in CONSUMERS:
        group = "inbound" if topic.startswith("kefu.inquiry.inbound.") else topic
        kinds += [(topic, f"malformed:{name}") for name, _ in MALFORMED]
        kinds += [(topic, f"contract:{name}") for name, _ in VIOLATIONS[group]]
        kinds.append((topic, "contract:wrong_envelope_type"))
        kinds.append((topic, "header:not_utf8"))
    kinds.append((topics.COMMERCE_ORDERS, "semantic:subject_is_not_the_order"))
    kinds.append((topics.inbound_channel_topic("chat"), "semantic:channel_mismatch"))
    out: list[Outbound] = []
    for n in range(count):
        topic, kind = kinds[n % len(kinds)] if n < len(kinds) else rng.choice(kinds)
        out.append(_poison(topic, kind, n))
    if huge_bytes:
        type_, subject, data = _valid_data(topics.inbound_channel_topic("email"), count)
        data["content"] = "x" * huge_bytes
        out.append(
            Outbound(
                topics.inbound_channel_topic("email"),
                subject.encode(),
                _envelope(type_, subject, data),
                kind="size:huge",
                ref=str(count),
            )
        )
    return out


def _poison(topic: str, kind: str, n: int) -> Outbound:
    family, name = kind.split(":", 1)
    type_, subject, data = _valid_data(topic, 100_000 + n)
    headers: dict[str, bytes] = {}
    value: bytes | None
    if family == "malformed":
        value = dict(MALFORMED)[name]
    elif family == "contract" and name == "wrong_envelope_type":
        value = _envelope("order.reviewed", subject, data)
    elif family == "contract":
        group = "inbound" if topic.startswith("kefu.inquiry.inbound.") else topic
        changes = dict(VIOLATIONS[group])[name]
        broken = {k: v for k, v in {**data, **changes}.items() if v is not None}
        value = _envelope(type_, subject, broken)
    elif family == "header":
        value = b"\xff not json either"
        headers = {"ce_type": b"\xff\xfe\xfd", "correlation_id": b"\xc3\x28"}
    elif name == "subject_is_not_the_order":
        value = _envelope(type_, "another-order", data)
    else:  # channel_mismatch: a phone message on the chat topic
        value = _envelope(type_, subject, {**data, "channel": "phone"})
    return Outbound(topic, subject.encode(), value, headers, kind=kind, ref=str(n))


def expected_services(record: Outbound) -> tuple[str, ...]:
    if record.kind == "semantic:subject_is_not_the_order":
        return ("orders",)  # after-sales keys its projection by order id, not the subject
    return CONSUMERS[record.topic]


async def run_poison(
    infra: LocalInfra, workdir: Path, config: PoisonConfig, log: Log = print
) -> PoisonReport:
    """The poison scenario with a fleet of its own, on ``infra`` (already up)."""
    fleet = Fleet(infra.endpoints, workdir)
    try:
        fleet.start_all()
        await asyncio.to_thread(fleet.wait_ready, None, 300.0)
        return await poison_scenario(fleet, infra, config, log)
    finally:
        fleet.stop_all()
        fleet.drop_databases()
        await delete_topics(infra.endpoints.kafka_bootstrap, fleet.prefix)


async def poison_scenario(
    fleet: Fleet, infra: LocalInfra, config: PoisonConfig, log: Log = print
) -> PoisonReport:
    """Poison mixed with good records on a running ``fleet``; then the dead-letter topics."""
    await asyncio.to_thread(fleet.wait_ready, None, 300.0)
    rng = random.Random(config.seed)
    report = PoisonReport()
    started = time.monotonic()
    pids = {name: inst.pid for name, inst in fleet.instances.items()}
    poison = poison_records(config.poison, config.huge_bytes, rng)
    good = [m for _, m in inquiry_messages(f"{fleet.token}p", config.good, rng)]
    good = [g for g in good if g.kind == "question"] or good
    mixed = poison + good
    rng.shuffle(mixed)
    log(f"sending {len(poison)} poison and {len(good)} good records")
    producer = Producer(infra.endpoints.kafka_bootstrap, fleet.prefix)
    await producer.start()
    try:
        produced: list[Produced] = []
        for i in range(0, len(mixed), 50):
            produced += await producer.send(mixed[i : i + 50])
        if config.at_limit_bytes:
            # Last, on a topic of its own consumer: if it blocks its partition, it blocks
            # nothing else of this test.
            produced += await producer.send(
                [
                    Outbound(
                        SURVEY_ANSWERS_TOPIC,
                        b"at-the-limit",
                        b"x" * config.at_limit_bytes,
                        kind="size:at_the_limit",
                        ref="at-the-limit",
                    )
                ]
            )
    finally:
        await producer.stop()
    await judge_poison(fleet, infra, produced, pids, config, report, log)
    report.counts["seconds: whole scenario"] = int(time.monotonic() - started)
    return report


async def judge_poison(
    fleet: Fleet,
    infra: LocalInfra,
    produced: list[Produced],
    pids: dict[str, int | None],
    config: PoisonConfig,
    report: PoisonReport,
    log: Log,
) -> None:
    expected: dict[tuple[str, str, int, int], Produced] = {}
    good: list[Produced] = []
    for p in produced:
        if p.record.kind in ("question", "bot", "spam"):
            good.append(p)
            continue
        for service in expected_services(p.record):
            expected[(service, p.topic, p.partition, p.offset)] = p
    dlqs = {
        s: topics.dead_letter_topic(s)
        for s in ("inquiry", "orders", "aftersales", "notifier", "feedback")
    }
    reader = TopicLog(
        infra.endpoints.kafka_bootstrap, fleet.prefix, [*dlqs.values(), topics.INQUIRY_EVENTS]
    )
    await reader.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.converge_seconds
    good_ids = {g.record.ref for g in good}
    try:
        while True:
            await reader.poll(3.0)
            found: dict[tuple[str, str, int, int], dict[str, str]] = {}
            for service, dlq in dlqs.items():
                for r in reader.records.get(dlq, []):
                    h = r.headers
                    key = (
                        service,
                        h.get("x-original-topic", ""),
                        int(h.get("x-original-partition", -1)),
                        int(h.get("x-original-offset", -1)),
                    )
                    found[key] = {**h, "_value_len": str(len(r.value or b""))}
            received = {
                str((e.get("data") or {}).get("message_id"))
                for e in reader.envelopes(topics.INQUIRY_EVENTS)
                if e.get("type") == "inquiry.received"
            }
            missing = [k for k in expected if k not in found]
            unprocessed = good_ids - received
            if (not missing and not unprocessed) or loop.time() > deadline:
                break
    finally:
        await reader.stop()

    good_offsets = {(g.topic, g.partition, g.offset) for g in good}
    wrongly_dead = [f"{k[0]}:{k[1]}@{k[3]}" for k in found if (k[1], k[2], k[3]) in good_offsets]
    without_reason = [
        f"{k[0]}:{k[1]}@{k[3]}" for k, h in found.items() if not h.get("x-dlq-reason")
    ]
    for k in missing:
        report.missing_by_kind[expected[k].record.kind] += 1
    c = report.counts
    c["poison records sent"] = len(produced) - len(good)
    c["dead letters expected (record x consuming service)"] = len(expected)
    c["dead letters found with a reason"] = (
        len(expected)
        - len(missing)
        - len([k for k in expected if k in found and not found[k].get("x-dlq-reason")])
    )
    c["poison records not dead-lettered"] = len(missing)
    c["good records sent"] = len(good)
    c["good records processed (inquiry.received)"] = len(good) - len(unprocessed)
    c["good records dead-lettered"] = len(wrongly_dead)
    restarts = [
        name for name, inst in fleet.instances.items() if not inst.alive() or inst.pid != pids[name]
    ]
    not_ready = [name for name in fleet.instances if not fleet.is_ready(name)]
    c["service processes that died"] = len(restarts)
    c["service processes not ready afterwards"] = len(not_ready)
    report.problem(
        "poison not dead-lettered (by kind)",
        [f"{kind} x{n}" for kind, n in report.missing_by_kind.items()],
    )
    report.problem("dead letters without a reason", without_reason)
    report.problem("good records not processed", sorted(unprocessed))
    report.problem("good records dead-lettered", wrongly_dead)
    report.problem("processes died", restarts)
    report.problem("processes not ready", not_ready)
    if missing:
        log(f"{len(missing)} poison records not dead-lettered: {dict(report.missing_by_kind)}")
