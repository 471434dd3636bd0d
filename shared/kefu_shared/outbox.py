"""The transactional outbox: events stored with the change that caused them, relayed afterwards.

A use case never publishes directly: it writes its events into the aggregate's document (see
``documents.py``) and the relay publishes them and removes them. A crash after the write and
before the publish loses nothing (the relay finds the events on its next scan); a crash after the
publish and before the removal publishes the same event again with the same id, which consumers
deduplicate. So: at least once, never under two different ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from kefu_shared.envelope import Envelope, utcnow
from kefu_shared.mongo import Document
from kefu_shared.tracing import current_trace_carrier

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
        return {
            "id": self.id,
            "topic": self.topic,
            "key": self.key,
            "body": self.body,
            "headers": self.headers,
            "created_at": self.created_at,
            "trace": self.trace,
        }

    @classmethod
    def from_document(cls, doc: Document) -> OutboxMessage:
        return cls(
            id=doc["id"],
            topic=doc["topic"],
            key=doc["key"],
            body=doc["body"],
            headers=dict(doc.get("headers") or {}),
            created_at=doc["created_at"],
            trace=dict(doc.get("trace") or {}),
        )


Publish = Callable[[OutboxMessage], Awaitable[None]]


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

    async def remove_relayed(self, doc_id: str, sent: set[str]) -> bool: ...


class OutboxRelay:
    """Scans aggregate stores for unsent events and publishes them in order per document."""

    def __init__(
        self,
        sources: Sequence[OutboxSource],
        publish: Publish,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 200,
        concurrency: int = 32,
        metrics: OutboxMetrics | None = None,
    ) -> None:
        self._sources = list(sources)
        self._publish = publish
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._semaphore = asyncio.Semaphore(concurrency)
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._stopping = False

    def add_source(self, source: OutboxSource) -> None:
        self._sources.append(source)

    def notify(self) -> None:
        """A write just staged events: relay now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                relayed = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox scan failed; retrying at the next poll")
                relayed = 0
            if relayed:
                continue  # more may be waiting: scan again without sleeping
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
            self._wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish what is pending now; returns how many events went out."""
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
            counts = await asyncio.gather(*(self._relay_document(source, d) for d in docs))
            total += sum(counts)
        if self._metrics is not None:
            self._metrics.backlog.set(backlog)
            age = (utcnow() - oldest).total_seconds() if oldest else 0.0
            self._metrics.oldest_age.set(max(age, 0.0))
        return total

    async def _relay_document(self, source: OutboxSource, doc: Document) -> int:
        sent: set[str] = set()
        async with self._semaphore:
            for item in doc.get("outbox") or ():
                message = OutboxMessage.from_document(item)
                try:
                    await self._publish(message)
                except Exception:
                    log.warning(
                        "publishing %s to %s failed", message.id, message.topic, exc_info=True
                    )
                    if self._metrics is not None:
                        self._metrics.failures.inc()
                    break  # keep per-document order: the rest waits for the next scan
                sent.add(message.id)
            if sent:
                if not await source.remove_relayed(doc["_id"], sent):
                    log.warning(
                        "could not mark events of %s relayed; they go out again", doc["_id"]
                    )
                if self._metrics is not None:
                    self._metrics.published.inc(len(sent))
        return len(sent)
