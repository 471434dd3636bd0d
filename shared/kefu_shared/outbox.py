"""The transactional outbox: events stored with the change that caused them, relayed afterwards.

A use case never publishes directly: it writes its events into the aggregate's document (see
``documents.py``) and the relay publishes them and removes them. The store hands every write that
staged events to the relay, which publishes that document's events at once; a slow sweep of
``outbox_pending`` documents is the safety net. A crash after the write and before the publish
loses nothing (the sweep finds the events, also at start-up); a crash after the publish and
before the removal publishes the same event again with the same id, which consumers deduplicate.
So: at least once, never under two different ids.

Order: one document's events go out oldest first, one relay pass per document at a time (a
FIFO lock per document, shared by hand-offs and the sweep). Events of one topic and key (one
partition) are published in the document's order and a failure stops that sequence, so a later
event never overtakes an earlier one; different partitions have no order between them in Kafka,
so they are published together.

Decision: with a ``send`` (the runtime gives one) a partition's sequence is handed to the
producer whole, without waiting for each confirmation, and the confirmations are awaited
afterwards: the producer puts the sequence into one or a few produce requests instead of one
round trip per event (measured with ``bench --quick``: Kafka's CPU at the max went from 0.54
to 0.21 of a core while the pipeline ran faster). The order holds because the producer is
idempotent: aiokafka keeps one produce request per broker in flight and retries a failed
batch, ahead of the later ones of its partition, until it succeeds (and a producer whose
sequence Kafka refused is replaced, ``producer_renewal``). Only the events before the first
unconfirmed one count as sent; the rest go out again after it on the next sweep (under their
ids, which consumers deduplicate), never before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from kefu_shared.envelope import Envelope, utcnow
from kefu_shared.mongo import Document
from kefu_shared.tracing import current_trace_carrier

if TYPE_CHECKING:
    from kefu_shared.documents import Stored

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxMessage:
    """A fully serialised Kafka message waiting in an aggregate's document."""

    id: str
    topic: str
    key: str
    body: str
    headers: dict[str, str]
    created_at: datetime = field(default_factory=utcnow)
    # W3C trace context of the change, so the relayed publish continues the same trace.
    trace: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_envelope(cls, envelope: Envelope[Any], topic: str) -> OutboxMessage:
        carrier = current_trace_carrier()
        return cls(
            id=envelope.id,
            topic=topic,
            key=envelope.subject,
            body=envelope.model_dump_json(),
            headers=envelope.kafka_headers(),
            trace=carrier,
        )

    def to_document(self) -> Document:
        # Packed: the relay reads only ``id`` and ``created_at``; the rest travels as one string.
        # FerretDB turns each field of a document into JSONB on every write and read, so one
        # string instead of a dozen fields per event made the inquiry's first write 18-31 %
        # and the relay's removal 13-25 % cheaper in store CPU (5 events, three interleaved
        # pairs on PostgreSQL).
        packed = json.dumps(
            [self.topic, self.key, self.body, self.headers, self.trace],
            ensure_ascii=False,
            separators=(",", ":"),
        )
        return {"id": self.id, "created_at": self.created_at, PACKED: packed}

    @classmethod
    def from_document(cls, doc: Document) -> OutboxMessage:
        if PACKED in doc:
            topic, key, body, headers, trace = json.loads(doc[PACKED])
        else:  # written field by field before the packed form: still relayed after an upgrade
            topic, key, body = doc["topic"], doc["key"], doc["body"]
            headers, trace = doc.get("headers"), doc.get("trace")
        return cls(
            id=doc["id"],
            topic=topic,
            key=key,
            body=body,
            headers=dict(headers or {}),
            created_at=doc["created_at"],
            trace=dict(trace or {}),
        )


# The outbox entry's field holding [topic, key, body, headers, trace] as JSON.
PACKED = "message"


Publish = Callable[[OutboxMessage], Awaitable[None]]
"""Publish one message and return once the broker confirmed it."""

Send = Callable[[OutboxMessage], Awaitable[Awaitable[object]]]
"""Hand one message to the producer and return its confirmation, to be awaited later."""


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.published = Counter(
            "kefu_outbox_published_total",
            "Events relayed from the outbox to Kafka.",
            ["service"],
            registry=registry,
        ).labels(service)
        self.failures = Counter(
            "kefu_outbox_publish_failures_total",
            "Relay attempts that failed to publish (retried on the next scan).",
            ["service"],
            registry=registry,
        ).labels(service)
        self.backlog = Gauge(
            "kefu_outbox_backlog_documents",
            "Aggregate documents holding events not yet relayed.",
            ["service"],
            registry=registry,
        ).labels(service)
        self.oldest_age = Gauge(
            "kefu_outbox_oldest_age_seconds",
            "Age of the oldest event waiting in the outbox at the last scan.",
            ["service"],
            registry=registry,
        ).labels(service)


class OutboxSource(Protocol):
    """Where the relay finds unsent events (a ``VersionedDocumentStore``)."""

    async def pending_outbox(self, limit: int) -> list[Document]: ...

    def outbox_message(self, item: Document) -> OutboxMessage:
        """The message an outbox entry stands for (opened, where the store seals them)."""
        ...

    async def remove_relayed(
        self,
        doc_id: str,
        sent: set[str],
        *,
        version: int | None = None,
        outbox: Sequence[Document] | None = None,
    ) -> bool: ...


class OutboxRelay:
    """Publishes the events each write hands over, in order per document, and sweeps slowly
    for events a crash or a failed publish left behind."""

    def __init__(
        self,
        sources: Sequence[OutboxSource],
        publish: Publish,
        *,
        poll_seconds: float = 30.0,
        retry_seconds: float = 1.0,
        batch_size: int = 200,
        concurrency: int = 32,
        metrics: OutboxMetrics | None = None,
        send: Send | None = None,
    ) -> None:
        self._sources = list(sources)
        self._publish = publish
        self._send = send
        self._poll_seconds = poll_seconds
        # After a failed publish the sweep comes back this soon instead of a full poll later.
        self._retry_seconds = min(retry_seconds, poll_seconds)
        self._batch_size = batch_size
        self._semaphore = asyncio.Semaphore(concurrency)
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._stopping = False
        self._failed = False
        self._doc_locks: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Ids confirmed by the broker lately: a pass that sees them again (its snapshot was
        # taken before another pass removed them) removes them without publishing twice.
        self._confirmed: OrderedDict[str, None] = OrderedDict()
        self._confirmed_limit = 10_000
        self._inflight: set[asyncio.Task[int]] = set()

    def add_source(self, source: OutboxSource) -> None:
        self._sources.append(source)
        hand_over = getattr(source, "hand_written_events_to", None)
        if hand_over is not None:
            hand_over(self.handoff)

    def notify(self) -> None:
        """A write just staged events: sweep now rather than at the next poll."""
        self._wake.set()

    def handoff(self, source: OutboxSource, stored: Stored) -> None:
        """A write just staged events: publish that document's outbox now, in the background."""
        if self._stopping:
            return  # the sweep of the next start publishes them
        task = asyncio.create_task(
            self._relay_document(source, stored.id, list(stored.outbox), stored.version)
        )
        self._inflight.add(task)
        task.add_done_callback(self._handed_off_done)

    def _handed_off_done(self, task: asyncio.Task[int]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("relaying handed-off events failed", exc_info=task.exception())
            self._failed = True
            self._wake.set()

    async def idle(self) -> None:
        """Wait until every handed-off document has been relayed (tests, benchmarks, stop)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def run(self) -> None:
        while not self._stopping:
            try:
                relayed = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox scan failed; retrying soon")
                self._failed = True
                relayed = 0
            if relayed:
                continue  # more may be waiting: scan again without sleeping
            if self._failed:
                # A publish or the scan failed (broker or store away): try again soon, not in
                # a tight loop and not a whole poll later.
                await asyncio.sleep(self._retry_seconds)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
            self._wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def relay_once(self) -> int:
        """Sweep: publish what is pending now; returns how many events went out."""
        self._failed = False
        total = 0
        backlog = 0
        oldest: datetime | None = None
        for source in self._sources:
            docs = await source.pending_outbox(self._batch_size)
            backlog += len(docs)
            for doc in docs:
                for item in doc.get("outbox") or ():
                    created = item.get("created_at")
                    if created is not None and (oldest is None or created < oldest):
                        oldest = created
            counts = await asyncio.gather(
                *(
                    self._relay_document(
                        source, doc["_id"], list(doc.get("outbox") or ()), doc.get("version")
                    )
                    for doc in docs
                )
            )
            total += sum(counts)
        if self._metrics is not None:
            self._metrics.backlog.set(backlog)
            age = (utcnow() - oldest).total_seconds() if oldest else 0.0
            self._metrics.oldest_age.set(max(age, 0.0))
        return total

    def _doc_lock(self, source: OutboxSource, doc_id: str) -> asyncio.Lock:
        key = (id(source), doc_id)
        lock = self._doc_locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._doc_locks[key] = lock
        return lock

    async def _relay_document(
        self, source: OutboxSource, doc_id: str, outbox: list[Document], version: int | None
    ) -> int:
        """Publish one document's events (a snapshot at ``version``) and remove them."""
        async with self._doc_lock(source, doc_id), self._semaphore:
            already = {str(m.get("id")) for m in outbox if m.get("id") in self._confirmed}
            # One sequence per partition (topic, key), in the document's order.
            sequences: dict[tuple[str, str], list[OutboxMessage]] = {}
            for item in outbox:
                if item.get("id") in already:
                    continue
                message = source.outbox_message(item)
                sequences.setdefault((message.topic, message.key), []).append(message)
            published = await asyncio.gather(
                *(self._publish_in_order(s) for s in sequences.values())
            )
            sent = already.union(*published)
            if sent:
                removed = await source.remove_relayed(
                    doc_id,
                    sent,
                    version=int(version) if version is not None else None,
                    outbox=outbox,
                )
                if not removed:
                    log.warning("could not mark events of %s relayed; they go out again", doc_id)
            count = sum(len(p) for p in published)
            if count and self._metrics is not None:
                self._metrics.published.inc(count)
        return count

    async def _publish_in_order(self, messages: list[OutboxMessage]) -> set[str]:
        if self._send is not None:
            return await self._send_in_order(messages, self._send)
        sent: set[str] = set()
        for message in messages:
            try:
                await self._publish(message)
            except Exception:
                self._publish_failed(message)
                break  # keep the partition's order: the rest waits for the next sweep
            self._confirm(sent, message)
        return sent

    async def _send_in_order(self, messages: list[OutboxMessage], send: Send) -> set[str]:
        """One partition's sequence handed to the producer in order, then its confirmations
        awaited; what follows the first failure counts as unsent (the sweep sends it again)."""
        confirmations: list[Awaitable[object]] = []
        for message in messages:
            try:
                confirmations.append(await send(message))
            except Exception:
                self._publish_failed(message)
                break
        results = await asyncio.gather(*confirmations, return_exceptions=True)
        sent: set[str] = set()
        for message, result in zip(messages, results, strict=False):
            if isinstance(result, BaseException):
                self._publish_failed(message, result)
                break
            self._confirm(sent, message)
        return sent

    def _publish_failed(self, message: OutboxMessage, error: BaseException | None = None) -> None:
        log.warning(
            "publishing %s to %s failed",
            message.id,
            message.topic,
            exc_info=error if error is not None else True,
        )
        if self._metrics is not None:
            self._metrics.failures.inc()
        self._failed = True
        self._wake.set()  # a sleeping sweep retries the rest soon

    def _confirm(self, sent: set[str], message: OutboxMessage) -> None:
        sent.add(message.id)
        self._confirmed[message.id] = None
        if len(self._confirmed) > self._confirmed_limit:
            self._confirmed.popitem(last=False)
