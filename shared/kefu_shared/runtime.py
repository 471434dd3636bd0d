"""One service's infrastructure, built once by its composition root.

A service's ``bootstrap.py`` calls ``build_runtime`` and then registers its subscribers, stores
and HTTP routers on it; ``http.py`` turns the runtime into the ASGI app that runs everything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from kefu_shared.batches import HandleOne, RecordBatchHandler, batch_subscriber
from kefu_shared.broker import (
    aiokafka_security_options,
    make_broker,
    publish_outbox_message,
    subscriber_options,
)
from kefu_shared.crypto import SealedFields, SealedStore
from kefu_shared.dead_letter import RetryPolicy
from kefu_shared.documents import VersionedDocumentStore
from kefu_shared.lag import ConsumerLagMonitor
from kefu_shared.mongo import Document, IndexSpec, ensure_indexes, make_client, outbox_index, ping
from kefu_shared.observability import instrument_pymongo, make_tracer_provider
from kefu_shared.outbox import OutboxMessage, OutboxMetrics, OutboxRelay
from kefu_shared.producer_renewal import ProducerRenewal
from kefu_shared.settings import BatchConsumerSettings, ServiceSettings
from kefu_shared.tracing import continue_trace

log = logging.getLogger(__name__)

BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class ServiceRuntime:
    name: str
    settings: ServiceSettings
    registry: CollectorRegistry
    tracer_provider: TracerProvider
    broker: KafkaBroker
    mongo: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    relay: OutboxRelay
    retry: RetryPolicy
    producer_renewal: ProducerRenewal
    indexes: list[IndexSpec] = field(default_factory=list)
    background: list[BackgroundTask] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started: bool = False

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def subscribe(
        self,
        topic: str,
        handler: Callable[..., Awaitable[Any]],
        *,
        group: str = "",
        **options: Any,
    ) -> Any:
        """Consume ``topic`` (a name from ``kefu_shared.topics``) with ``handler``.

        The consumer group defaults to the service's; pass ``group`` for one of its own (e.g.
        one group per channel). Returns FastStream's subscriber (for tests and AsyncAPI).
        """
        kwargs = subscriber_options(self.name, group or self.settings.consumer_group, **options)
        return self.broker.subscriber(self.topic(topic), **kwargs)(handler)

    def batch_subscriber(
        self,
        *topics: str,
        model: Any,
        handle: HandleOne,
        title: str,
        description: str = "",
        group_id: str = "",
        gather_ms: int = 0,
    ) -> RecordBatchHandler:
        """Consume ``topics`` (full names, ``self.topic(...)``) in batches, each record decoded
        as ``model`` and handled alone (``kefu_shared.batches``); how many records at once and
        per fetch are the service's ``BatchConsumerSettings``; ``gather_ms`` as in
        ``batches.batch_subscriber``."""
        if not isinstance(self.settings, BatchConsumerSettings):
            raise TypeError(f"{self.name}: batch consumers need BatchConsumerSettings")
        return batch_subscriber(
            self.broker,
            *topics,
            model=model,
            handle=handle,
            tracer_provider=self.tracer_provider,
            concurrency=self.settings.consumer_workers,
            max_records=self.settings.consumer_batch_records,
            title=title,
            description=description,
            gather_ms=gather_ms,
            **self.subscriber_options(**({"group_id": group_id} if group_id else {})),
        )

    def consumer_groups(self) -> set[str]:
        return {g for s in self.broker.subscribers if (g := getattr(s, "group_id", None))}

    def subscriber_options(self, **overrides: Any) -> dict[str, Any]:
        """Consumer group and offsets for this service's subscribers."""
        return subscriber_options(self.name, self.settings.consumer_group, **overrides)

    def document_store(
        self, collection: str, *, sealed: SealedFields | None = None, **kwargs: Any
    ) -> VersionedDocumentStore:
        """An aggregate collection whose outbox this service's relay publishes; with ``sealed``,
        those fields and the waiting events are sealed at rest (``SealedStore``)."""
        store = (
            VersionedDocumentStore(self.db[collection], on_events=self.relay.notify, **kwargs)
            if sealed is None
            else SealedStore(self.db[collection], sealed, on_events=self.relay.notify, **kwargs)
        )
        self.relay.add_source(store)
        self.indexes.append(outbox_index(collection))
        return store

    def lag_monitor(self) -> ConsumerLagMonitor:
        """Measures the lag of the service's groups, connecting like its broker (TLS/SASL)."""
        return ConsumerLagMonitor(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            groups=self.consumer_groups,
            registry=self.registry,
            service=self.name,
            interval_seconds=self.settings.lag_interval_seconds,
            client_options=aiokafka_security_options(self.settings),
        )

    async def start(self, *, timeout: float = 120.0) -> None:
        """Wait for the store and the broker, then start consuming and the background loops."""
        await _until_ready("MongoDB", lambda: ensure_indexes(self.db, self.indexes), timeout)
        await _until_ready("Kafka", self.broker.start, timeout)
        self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-outbox"))
        lag = self.lag_monitor()
        self._tasks.append(asyncio.create_task(_supervised(f"{self.name}-lag", lag.run)))
        for task in self.background:
            name = f"{self.name}-{task.__name__}"
            self._tasks.append(asyncio.create_task(_supervised(name, task), name=name))
        self.started = True

    async def stop(self) -> None:
        self.relay.stop()
        # Let hand-offs already publishing finish (the sweep of the next start covers the rest).
        try:
            await asyncio.wait_for(self.relay.idle(), timeout=5.0)
        except TimeoutError:
            log.warning("outbox hand-offs still running at stop; the next sweep relays them")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.broker.stop()
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))
        await self.mongo.close()
        self.tracer_provider.shutdown()
        self.started = False

    async def readiness(self) -> dict[str, bool]:
        broker_ok = False
        if self.started:
            try:
                broker_ok = await self.broker.ping(timeout=2.0)
            except Exception:
                broker_ok = False
            # A producer Kafka refused and that could not be replaced publishes nothing.
            broker_ok = broker_ok and self.producer_renewal.healthy
        store_ok = await ping(self.db)
        return {"kafka": broker_ok, "mongodb": store_ok, "started": self.started}


def build_runtime(
    name: str,
    settings: ServiceSettings,
    *,
    span_processors: Sequence[SpanProcessor] = (),
) -> ServiceRuntime:
    registry = CollectorRegistry()
    # CPU, memory, file descriptors and GC of this process, on the service's own registry.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    tracer_provider = make_tracer_provider(
        name,
        otlp_endpoint=settings.otel_exporter_otlp_endpoint,
        processors=list(span_processors),
    )
    if settings.otel_exporter_otlp_endpoint or span_processors:
        # Store-command spans only when spans go somewhere: building one costs ~75 us of CPU
        # per command (measured), for nothing when no exporter reads it. The message's own
        # spans stay: their ids are in the logs and the Kafka headers.
        instrument_pymongo(tracer_provider)
    retry = RetryPolicy(
        attempts=settings.retry_attempts,
        initial_backoff=settings.retry_initial_backoff_seconds,
        max_backoff=settings.retry_max_backoff_seconds,
    )
    renewal = ProducerRenewal(registry, name)
    broker = make_broker(
        service=name,
        renewal=renewal,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        registry=registry,
        tracer_provider=tracer_provider,
        retry=retry,
        topic_prefix=settings.topic_prefix,
        security=settings,
    )
    mongo = make_client(settings.mongodb_uri, app_name=f"kefu-{name}")
    db = mongo[settings.mongodb_database or f"kefu_{name}"]
    relay = OutboxRelay(
        [],
        partial(publish_outbox_message, broker),
        poll_seconds=settings.outbox_sweep_seconds,
        retry_seconds=settings.outbox_poll_seconds,
        metrics=OutboxMetrics(registry, name),
        send=partial(send_outbox_message, broker),
    )
    return ServiceRuntime(
        name=name,
        settings=settings,
        registry=registry,
        tracer_provider=tracer_provider,
        broker=broker,
        mongo=mongo,
        db=db,
        relay=relay,
        retry=retry,
        producer_renewal=renewal,
    )


async def send_outbox_message(broker: KafkaBroker, message: OutboxMessage) -> Awaitable[object]:
    """Hand a relayed event to the producer inside the trace of the change that produced it;
    returns the broker's confirmation for the relay to await (``OutboxRelay``: a partition's
    events go out in one request instead of one round trip each)."""
    with continue_trace(message.trace):
        return await broker.publish(
            message.body.encode(),
            topic=message.topic,
            key=message.key.encode(),
            headers=message.headers,
            correlation_id=message.headers.get("correlation_id"),
            no_confirm=True,
        )


async def _supervised(name: str, task: BackgroundTask) -> None:
    """Keep a background loop alive: a crash is logged at once and the loop restarts."""
    delay = 1.0
    while True:
        try:
            await task()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s crashed; restarting in %.0fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def _until_ready(what: str, attempt: Callable[[], Awaitable[object]], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.5
    while True:
        try:
            await attempt()
            return
        except Exception as exc:
            if loop.time() + delay > deadline:
                raise RuntimeError(f"{what} not reachable after {timeout:.0f}s: {exc}") from exc
            log.warning("%s not reachable yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
