"""kefu's intake end to end, as separate service processes on the benchmark's broker and store.

A chat message goes in on ``kefu.inquiry.inbound.chat``; the inquiry service records, classifies
and stores it, the seeded article answers it, the outbox relays ``inquiry.received`` /
``classified`` / ``auto_answered`` / ``resolved`` and the ``bot_answer`` request; the notifier
records the delivery, sends it with the log provider and relays ``notification.sent``.

Timestamps: ``t0`` is the wall clock just before the benchmark's producer sends the inbound
message; the request and ``notification.sent`` times are the broker timestamps (CreateTime, set
by the services' producers when they publish), so the collector's own lag does not count.
Both clocks are this machine's. Messages are correlated by the envelope's correlation id, which
every event of the journey carries in its ``correlation_id`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kefu_inquiry.adapters import mongo as mongo_adapter
from kefu_inquiry.domain.knowledge import Article
from kefu_shared import topics
from pymongo import AsyncMongoClient

from bench.baselines import window_rate
from bench.payloads import ARTICLE, Shapes, inbound
from bench.procs import ServiceProcess, create_topics

SENT_TYPE = "kefu.notification.sent.v1"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _rate(stamps: Sequence[float], sent: int, duration: float) -> float:
    """Sustained completions per second; when only part of a backlog completed in time (or too
    few to leave out ramp and tail), completions over the whole wait, a lower bound."""
    if len(stamps) == sent and sent >= 10:
        return window_rate(stamps)
    return len(stamps) / duration if duration > 0 else 0.0


@dataclass
class Journeys:
    """What the collector saw, per correlation id."""

    published: dict[str, float] = field(default_factory=dict)
    requested: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)


class Collector:
    """Reads the notification requests and the notifier's events for the whole run."""

    def __init__(self, bootstrap: str, topic_names: Sequence[str]) -> None:
        self._bootstrap = bootstrap
        self._topics = list(topic_names)
        self.journeys = Journeys()
        self.progress = asyncio.Event()  # set whenever a journey completes
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=4 << 20,
        )
        await consumer.start()
        tps: list[TopicPartition] = []
        for topic in self._topics:
            partitions = consumer.partitions_for_topic(topic)
            while not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            tps += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        requests_topic = self._topics[0]
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batch.items():
                for r in records:
                    headers = dict(r.headers or ())
                    cid = headers.get("correlation_id", b"").decode()
                    if not cid:
                        continue
                    if tp.topic == requests_topic:
                        self.journeys.requested.setdefault(cid, r.timestamp / 1000)
                    elif headers.get("ce_type") == SENT_TYPE.encode():
                        self.journeys.sent.setdefault(cid, r.timestamp / 1000)
                        self.progress.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer:
            await self._consumer.stop()


@dataclass
class PhaseResult:
    name: str
    sent: int
    completed: int
    requested: int
    duration_s: float
    offered_per_s: float
    e2e_per_s: float
    inquiry_per_s: float
    latency_ms: dict[str, float]
    inquiry_latency_ms: dict[str, float]
    stored_inquiries: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    store_commands_per_message: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Kefu:
    """The inquiry and notifier services of one benchmark run, and a load generator for them."""

    def __init__(
        self,
        *,
        run: str,
        bootstrap: str,
        mongodb_uri: str,
        prefix: str,
        log_dir: Path,
        partitions: int,
        shapes: Shapes,
    ) -> None:
        self.run = run
        self.bootstrap = bootstrap
        self.mongodb_uri = mongodb_uri
        self.prefix = prefix
        self.log_dir = log_dir
        self.partitions = partitions
        self.shapes = shapes
        self.inquiry_db = f"bench_{run}_inquiry"
        self.notifier_db = f"bench_{run}_notifier"
        self.inbound_topic = prefix + topics.inbound_channel_topic("chat")
        self.requests_topic = prefix + topics.NOTIFICATION_REQUESTS
        self.events_topic = prefix + topics.NOTIFIER_EVENTS
        self.inquiries: list[ServiceProcess] = []
        self.notifier: ServiceProcess | None = None
        self.collector = Collector(bootstrap, [self.requests_topic, self.events_topic])
        self.producer: AIOKafkaProducer | None = None
        self.mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        self._seq = 0
        self.stored = 0  # inquiries in the service's collection (preloaded + journeys)

    # -- processes ----------------------------------------------------------------------------

    def _env(self, service: str) -> dict[str, str]:
        prefix = f"KEFU_{service.upper()}_"
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "MONGODB_URI": self.mongodb_uri,
            f"{prefix}TOPIC_PREFIX": self.prefix,
            f"{prefix}MONGODB_DATABASE": f"bench_{self.run}_{service}",
        }
        if service == "inquiry":
            env[f"{prefix}CHANNELS"] = "chat"
        return env

    def new_inquiry(self) -> ServiceProcess:
        n = len(self.inquiries) + 1
        proc = ServiceProcess(f"inquiry-{n}", "inquiry", self._env("inquiry"), self.log_dir)
        self.inquiries.append(proc)
        return proc

    async def start(self) -> None:
        every = [
            self.inbound_topic,
            self.requests_topic,
            self.events_topic,
            self.prefix + topics.INQUIRY_EVENTS,
            self.prefix + topics.dead_letter_topic("inquiry"),
            self.prefix + topics.dead_letter_topic("notifier"),
        ]
        await create_topics(self.bootstrap, dict.fromkeys(every, self.partitions))
        # The article as the service's adapter stores it (its HTTP API needs a bearer token).
        article = Article(id=f"bench-{self.run}", **ARTICLE)
        await self.mongo[self.inquiry_db][mongo_adapter.ARTICLES].replace_one(
            {"_id": article.id}, article.model_dump(mode="json"), upsert=True
        )
        self.notifier = ServiceProcess("notifier", "notifier", self._env("notifier"), self.log_dir)
        first = self.new_inquiry()
        self.notifier.start()
        first.start()
        await asyncio.gather(self.notifier.wait_ready(), first.wait_ready())
        await self.collector.start()
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all", linger_ms=2
        )
        await self.producer.start()

    async def add_inquiry_instance(self) -> ServiceProcess:
        proc = self.new_inquiry()
        proc.start()
        await proc.wait_ready()
        return proc

    def processes(self) -> dict[str, int]:
        out = {p.instance: p.pid for p in self.inquiries if p.process}
        if self.notifier and self.notifier.process:
            out["notifier"] = self.notifier.pid
        return out

    async def stop(self) -> None:
        if self.producer:
            await self.producer.stop()
        await self.collector.stop()
        procs = [*self.inquiries, *([self.notifier] if self.notifier else [])]
        await asyncio.gather(*(asyncio.to_thread(p.stop, 5.0) for p in procs))
        await self.mongo.close()

    # -- data ---------------------------------------------------------------------------------

    def stored_inquiries(self) -> int:
        """Inquiries stored now, counted by the benchmark: on FerretDB 1.24 even
        ``estimated_document_count`` reads every document (14 s for 2,000 under load)."""
        return self.stored

    async def reset_data(self) -> None:
        """Delete the journeys of earlier phases, so each phase starts from the same data."""
        idb, ndb = self.mongo[self.inquiry_db], self.mongo[self.notifier_db]
        await idb["inquiries"].delete_many({})
        await idb["customers"].delete_many({})
        await ndb["deliveries"].delete_many({})
        await ndb["customers"].delete_many({})
        self.stored = 0

    async def preload(self, total: int, deadline: float, chunk: int = 1000) -> tuple[int, float]:
        """Bring the inquiries collection to ``total`` stored (resolved, relayed) inquiries with
        the service's own document shape, or as far as it gets by ``deadline`` (monotonic);
        returns (stored now, documents per second)."""
        collection = self.mongo[self.inquiry_db]["inquiries"]
        have = self.stored
        started = time.perf_counter()
        added = 0
        while have + added < total and time.monotonic() < deadline:
            n = min(chunk, total - have - added)
            docs = [
                self.shapes.inquiry_doc(f"pre-{self.run}-{have + added + i}", relayed=True)
                for i in range(n)
            ]
            await collection.insert_many(docs, ordered=False)
            added += n
        self.stored = have + added
        return self.stored, added / max(time.perf_counter() - started, 1e-6)

    async def probe_store(self, limit_s: float = 30.0) -> dict[str, float | None]:
        """The exact store commands the services issue per message or per second, each timed
        once (ms) on the inquiries collection as it is now; None once ``limit_s`` is spent."""
        from datetime import UTC, datetime

        c = self.mongo[self.inquiry_db]["inquiries"]
        due = self.mongo[self.inquiry_db]["sla_due"]
        doc_id = f"probe-{self.run}"
        await c.insert_one(self.shapes.inquiry_doc(doc_id, relayed=True))
        commands: dict[str, Callable[[], Awaitable[Any]]] = {
            "find_one by _id (load)": lambda: c.find_one({"_id": doc_id}),
            "update_one {_id, version} (compare-and-set, MongoDB form)": lambda: c.update_one(
                {"_id": doc_id, "version": 2}, {"$set": {"version": 2}}
            ),
            "find_one {_id} version + update_one {_id} (its FerretDB form)": lambda: (
                _read_then_update(c, doc_id)
            ),
            "find outbox_pending (relay sweep, every 30 s)": lambda: (
                c.find({"outbox_pending": True}, {"outbox": 1, "version": 1}).limit(200).to_list()
            ),
            "find sla_due at <= now (SLA timer, every second)": lambda: (
                due.find(
                    {"at": {"$lte": datetime.now(UTC)}, "channel": {"$in": ["chat"]}}, {"_id": 1}
                )
                .sort("at", 1)
                .limit(500)
                .to_list()
            ),
            "find status = each open status (SLA due reconcile, every 5 min)": lambda: _find_each(
                c,
                [{"status": s} for s in ("assigned", "escalated", "queued")],
                {"sla_next_at": 1, "channel": 1},
            ),
        }
        out: dict[str, float | None] = {}
        spent = 0.0
        for name, command in commands.items():
            if spent > limit_s:
                out[name] = None
                continue
            t = time.perf_counter()
            await command()
            took = time.perf_counter() - t
            spent += took
            out[name] = round(took * 1000, 1)
        await c.delete_one({"_id": doc_id})
        return out

    # -- load ---------------------------------------------------------------------------------

    def _messages(self, count: int) -> list[tuple[bytes, bytes, str]]:
        out = [inbound(self._seq + i, self.run) for i in range(count)]
        self._seq += count
        self.stored += count  # each journey stores one inquiry
        return out

    async def _publish(self, messages: Sequence[tuple[bytes, bytes, str]]) -> list[Any]:
        assert self.producer is not None
        futures = []
        published = self.collector.journeys.published
        for key, body, cid in messages:
            published[cid] = time.time()
            futures.append(await self.producer.send(self.inbound_topic, body, key=key))
        return futures

    async def _wait(self, cids: Sequence[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = self.collector.journeys.sent
        progress = self.collector.progress
        while loop.time() < deadline and not all(c in sent for c in cids):
            progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), min(0.5, deadline - loop.time()))

    def _result(
        self, name: str, cids: Sequence[str], duration: float, offered: float, skip: int = 0
    ) -> PhaseResult:
        j = self.collector.journeys
        measured = list(cids[skip:])
        done = [c for c in measured if c in j.sent]
        asked = [c for c in measured if c in j.requested]
        e2e = [(j.sent[c] - j.published[c]) * 1000 for c in done]
        intake = [(j.requested[c] - j.published[c]) * 1000 for c in asked]

        def pct(values: list[float]) -> dict[str, float]:
            return {f"p{q}": round(percentile(values, q), 1) for q in (50, 95, 99)}

        return PhaseResult(
            name=name,
            sent=len(measured),
            completed=len(done),
            requested=len(asked),
            duration_s=round(duration, 2),
            offered_per_s=round(offered, 1),
            e2e_per_s=round(_rate([j.sent[c] for c in done], len(measured), duration), 2),
            inquiry_per_s=round(_rate([j.requested[c] for c in asked], len(measured), duration), 2),
            latency_ms=pct(e2e),
            inquiry_latency_ms=pct(intake),
        )

    async def warm_up(self, count: int, timeout: float = 60.0) -> float:
        """A few journeys to open every connection; returns a rough messages/s."""
        messages = self._messages(count)
        started = time.perf_counter()
        await asyncio.gather(*await self._publish(messages))
        await self._wait([m[2] for m in messages], timeout)
        done = sum(1 for m in messages if m[2] in self.collector.journeys.sent)
        return done / (time.perf_counter() - started)

    async def saturate(self, name: str, count: int, timeout: float) -> PhaseResult:
        """Maximum sustained throughput: a backlog of ``count`` messages published at once,
        completions per second over the middle 80 % of them."""
        messages = self._messages(count)
        started = time.perf_counter()
        await asyncio.gather(*await self._publish(messages))
        offered = count / (time.perf_counter() - started)
        cids = [m[2] for m in messages]
        await self._wait(cids, timeout)
        result = self._result(name, cids, time.perf_counter() - started, offered)
        if result.completed < result.sent:
            result.note = f"{result.sent - result.completed} not sent within {timeout:.0f}s"
        return result

    async def steady(
        self, name: str, rate: float, seconds: float, drain_timeout: float
    ) -> PhaseResult:
        """Open loop: ``rate`` messages/s for ``seconds``, on schedule whatever the latency;
        the first second is a warm-up and is not counted."""
        count = max(int(rate * seconds), 3)
        messages = self._messages(count)
        futures: list[Any] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        behind = 0.0
        while sent < count:
            due = min(count, int((loop.time() - start) * rate) + 1)
            if due > sent:
                behind = max(behind, loop.time() - (start + sent / rate))
                futures += await self._publish(messages[sent:due])
                sent = due
            await asyncio.sleep(min(0.005, 1 / rate))
        await asyncio.gather(*futures)
        # The schedule's length, not the last send's: with a few messages they differ a lot.
        duration = max(loop.time() - start, count / rate)
        cids = [m[2] for m in messages]
        await self._wait(cids, drain_timeout)
        skip = min(int(rate), count // 5)
        result = self._result(name, cids, duration, count / duration, skip=skip)
        notes = []
        if behind > 0.05:
            notes.append(f"generator fell {behind * 1000:.0f} ms behind schedule")
        if result.completed < result.sent:
            notes.append(f"{result.sent - result.completed} not sent within the drain time")
        result.note = "; ".join(notes)
        return result


async def _find_each(c: Any, filters: list[dict[str, Any]], projection: dict[str, Any]) -> int:
    found = 0
    for where in filters:
        found += len(await c.find(where, projection).to_list())
    return found


async def _read_then_update(c: Any, doc_id: str) -> None:
    """The store's compare-and-set on FerretDB: both filters are an exact ``_id``."""
    doc = await c.find_one({"_id": doc_id}, {"version": 1})
    await c.update_one({"_id": doc_id}, {"$set": {"version": doc["version"] if doc else 2}})
