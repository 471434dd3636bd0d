"""Where did a crash run's lost inquiry messages go?

For each customer message without its ``inquiry.received`` (or ``inquiry.spam_filtered``)
event, it looks in order at: the inbound record at the offset the traffic producer was given,
the inquiry service's store (the inquiry document the message opens, its ``applied`` ids and
its ``outbox``), and the committed offset of the channel's consumer group. Each lost message
lands in one place:

- ``inbound record missing``: the broker confirmed the record, but it is not there;
- ``not consumed``: at or after the group's committed offset, no document (still waiting);
- ``skipped by the consumer``: before the committed offset, yet never stored;
- ``stored, event in the outbox``: stored with its events, never relayed;
- ``stored, event gone``: stored, its event neither in the outbox nor on the topic.

``crash_scenario`` runs it when messages were lost, while the fleet's data is still there; by
hand, on what ``full_run --crash --keep-data`` left:

    uv run python -m tests.reliability.postmortem /tmp/crash1/crash [--limit 20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kefu_shared.outbox import OutboxMessage
from pymongo import AsyncMongoClient

from .fleet import KAFKA_PORT, MONGO_PORT

INBOUND = "kefu.inquiry.inbound."
EVENT_TYPES = ("inquiry.received", "inquiry.spam_filtered")

# (message id, kind, full topic, partition, offset): what the traffic producer was told
Sent = tuple[str, str, str, int, int]


def inquiry_id_for(message_id: str) -> str:
    """As the inquiry domain derives a first message's inquiry id (tests may not import it)."""
    return "inq-" + hashlib.sha256(message_id.encode()).hexdigest()[:20]


@dataclass
class Diagnosis:
    where: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)  # one per lost message, up to a limit
    offsets: list[str] = field(default_factory=list)  # per inbound partition


async def committed_and_ends(
    bootstrap: str, prefix: str, group_prefix: str
) -> dict[tuple[str, int], tuple[int | None, int]]:
    """(topic, partition) of every inbound topic -> (its channel group's committed offset,
    end offset)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        out: dict[tuple[str, int], tuple[int | None, int]] = {}
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix + INBOUND))
        # the partitions of topics this client has not seen yet
        await consumer._client.force_metadata_update()
        for topic in names:
            channel = topic.rsplit(".", 1)[1]
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            ends = await consumer.end_offsets(parts)
            offsets = await admin.list_consumer_group_offsets(
                f"{group_prefix}-inquiry-{channel}", partitions=parts
            )
            for tp in parts:
                meta = offsets.get(tp)
                committed = meta.offset if meta is not None and meta.offset >= 0 else None
                out[(topic, tp.partition)] = (committed, ends[tp])
        return out
    finally:
        await consumer.stop()
        await admin.close()


async def records_at(
    bootstrap: str, where: list[tuple[str, int, int]]
) -> set[tuple[str, int, int]]:
    """Which of these (topic, partition, offset)s hold a record."""
    found: set[tuple[str, int, int]] = set()
    if not where:
        return found
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        for topic, partition, offset in where:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            batch = await consumer.getmany(tp, timeout_ms=3000, max_records=1)
            if any(r.offset == offset for r in batch.get(tp, [])):
                found.add((topic, partition, offset))
    finally:
        await consumer.stop()
    return found


def _event_types(doc: dict[str, Any]) -> list[str]:
    out = []
    for item in doc.get("outbox") or ():
        try:
            out.append(str(json.loads(OutboxMessage.from_document(item).body).get("type")))
        except (KeyError, TypeError, ValueError):
            out.append("?")
    return out


async def diagnose_lost(
    *,
    bootstrap: str,
    mongodb_uri: str,
    prefix: str,
    database: str,
    group_prefix: str,
    lost: list[str],
    sent: list[Sent],
    limit: int = 20,
) -> Diagnosis:
    """Place every lost message (see the module's docstring); ``prefix`` is the run's topic
    prefix, ``database`` the inquiry service's, ``group_prefix`` its CONSUMER_GROUP."""
    by_id = {s[0]: s for s in sent}
    rank = {s[0]: n for n, s in enumerate(sent)}
    diagnosis = Diagnosis()
    offsets = await committed_and_ends(bootstrap, prefix, group_prefix)
    for (topic, p), (committed, end) in sorted(offsets.items()):
        ours = sorted(by_id[m][4] for m in lost if m in by_id and by_id[m][2:4] == (topic, p))
        span = f"; lost offsets {ours[0]}..{ours[-1]} ({len(ours)})" if ours else ""
        diagnosis.offsets.append(
            f"{topic.removeprefix(prefix)}[{p}] committed {committed} of {end}{span}"
        )
    present = await records_at(bootstrap, [by_id[m][2:] for m in lost if m in by_id])
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_uri, serverSelectionTimeoutMS=5000
    )
    try:
        inquiries = client[database]["inquiries"]
        for m in sorted(lost, key=lambda m: rank.get(m, -1)):
            if m not in by_id:
                diagnosis.where["not produced (no offset known)"] += 1
                continue
            _, kind, topic, p, o = by_id[m]
            doc = await inquiries.find_one({"_id": inquiry_id_for(m)})
            committed = offsets.get((topic, p), (None, 0))[0]
            if (topic, p, o) not in present:
                place = "inbound record missing"
            elif doc is None:
                consumed = committed is not None and o < committed
                place = "skipped by the consumer" if consumed else "not consumed"
            elif any(t in EVENT_TYPES for t in _event_types(doc)):
                place = "stored, event in the outbox"
            else:
                place = "stored, event gone"
            diagnosis.where[place] += 1
            if len(diagnosis.lines) < limit:
                state = (
                    "no inquiry document"
                    if doc is None
                    else f"inquiry v{doc.get('version')} {doc.get('status')}, applied "
                    f"{m in (doc.get('applied') or ())}, outbox {_event_types(doc)}"
                )
                diagnosis.lines.append(
                    f"#{rank[m]} {m} ({kind}) {topic.removeprefix(prefix)}[{p}]@{o} "
                    f"(committed {committed}): {place}; {state}"
                )
    finally:
        await client.close()
    return diagnosis


def _token(sent: list[Sent]) -> str:
    """The run's token, from its topic names (``rel<token>.<topic>``)."""
    m = re.match(r"rel([0-9a-f]+)\.", str(sent[0][2])) if sent else None
    if m is None:
        raise SystemExit("no run token in the produced topics")
    return m.group(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.postmortem")
    parser.add_argument("workdir", type=Path, help="the crash run's workdir (…/crash)")
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    data = json.loads((args.workdir / "postmortem.json").read_text())
    sent: list[Sent] = [
        (str(a), str(b), str(c), int(d), int(e)) for a, b, c, d, e in data["produced"]
    ]
    lost: list[str] = data["findings"].get("messages never received", [])
    token = _token(sent)
    diagnosis = asyncio.run(
        diagnose_lost(
            bootstrap=f"127.0.0.1:{KAFKA_PORT}",
            mongodb_uri=f"mongodb://127.0.0.1:{MONGO_PORT}/",
            prefix=f"rel{token}.",
            database=f"rel_{token}_inquiry",
            group_prefix=f"rel{token}",
            lost=lost,
            sent=sent,
            limit=args.limit,
        )
    )
    messages = sum(1 for s in sent if s[0].startswith("m-"))
    print(f"run {token}: {len(lost)} of {messages} messages lost; {dict(diagnosis.where)}")
    print(
        "\n".join(["inbound partitions:", *diagnosis.offsets, "lost messages:", *diagnosis.lines])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
