"""A new idempotent producer when the broker has stopped accepting the old one's sequence.

aiokafka (0.14) numbers each partition's batches for the broker's duplicate check, and it counts
a batch it gives up on without sending (one that outlived ``request_timeout_ms`` while the
partition had no leader, as when a broker restarts) as sent. The broker then waits for a
sequence number that never comes and refuses every later batch to that partition with
``OutOfOrderSequenceNumber``, until the process restarts (reproduced: a broker restart left 16
keys refused for more than 25 s). The Java client bumps the producer epoch on this error; aiokafka
does not, so the kernel does the equivalent: it replaces the broker's producer with a new one (a
new producer id, sequences from zero) and lets the failed publish be retried (the outbox relay
and the consumers' retries do that), now in order on the new producer.

This is a FastStream publish middleware, so every publish of the service (relay, dead letters)
goes through it, confirmed or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.producer import AioKafkaFastProducerImpl
from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

# The broker refuses this producer's state, not the message: only a new producer gets past it.
PRODUCER_STATE_ERRORS: tuple[type[BaseException], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)


class ProducerRenewal:
    """Replaces a broker's aiokafka producer, once per failure however many publishes saw it."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self._broker: KafkaBroker | None = None
        self._lock = asyncio.Lock()
        self.renewals = Counter(
            "kefu_kafka_producer_renewals_total",
            "Kafka producers replaced because the broker refused their sequence or id.",
            ["service"],
            registry=registry,
        ).labels(service)
        # False from a failed renewal until one succeeds: the service is not ready meanwhile.
        self.healthy = True
        self._background: set[asyncio.Task[None]] = set()

    def bind(self, broker: KafkaBroker) -> None:
        self._broker = broker

    def current(self) -> AIOKafkaProducer | None:
        """The aiokafka producer the broker publishes with now (None before it connects)."""
        if self._broker is None:
            return None
        fast = self._broker.config.broker_config.producer
        # FastStream keeps the client in a private state object; the renewal test on a real
        # broker fails if an upgrade moves it.
        state = getattr(fast, "_producer", None)
        producer = getattr(state, "producer", None) if state else None
        return producer if isinstance(producer, AIOKafkaProducer) else None

    def needs_renewal(self, exc: BaseException | None, producer: AIOKafkaProducer) -> bool:
        """Whether a publish that failed with ``exc`` on ``producer`` calls for a new one."""
        if exc is None:
            return False
        return isinstance(exc, PRODUCER_STATE_ERRORS) or _sender_stopped(producer)

    async def renew(self, failed: AIOKafkaProducer) -> None:
        """Swap ``failed`` for a started new producer, unless that was done already."""
        async with self._lock:
            if self._broker is None or self.current() is not failed:
                return  # another publish that saw the same failure renewed it
            fast = self._broker.config.broker_config.producer
            if not isinstance(fast, AioKafkaFastProducerImpl):
                return  # FastStream's test broker: no client to replace
            fresh = AIOKafkaProducer(**self._broker._connection_kwargs)
            try:
                # connect() starts the new client before it takes the old one's place, so a
                # concurrent publish finds one or the other, never none.
                await fast.connect(fresh, serializer=fast.serializer, codec=fast.codec)
            except Exception:
                self.healthy = False
                log.exception("could not start a new Kafka producer; the next failure retries")
                await _stop_quietly(fresh)
                return
            self.healthy = True
            self.renewals.inc()
            log.warning("Kafka refused the producer's sequence or id; publishing with a new one")
        # Batches of healthy partitions still in flight on the old client finish first.
        await _stop_quietly(failed)

    def renew_after(self, done: asyncio.Future[Any], producer: AIOKafkaProducer | None) -> None:
        """An unconfirmed publish's callback: its failure arrives on the future, later."""
        exc = None if done.cancelled() else done.exception()
        if producer is not None and self.needs_renewal(exc, producer):
            task = asyncio.get_running_loop().create_task(self.renew(producer))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def middleware(self) -> type[BaseMiddleware]:
        """The broker middleware factory that watches every publish."""
        return type("BoundProducerRenewal", (ProducerRenewalMiddleware,), {"renewal": self})


class ProducerRenewalMiddleware(BaseMiddleware):
    """Use ``ProducerRenewal.middleware()`` to get the factory a broker takes."""

    renewal: ProducerRenewal  # set on the subclass the factory makes

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        renewal = self.renewal
        producer = renewal.current()
        try:
            result = await call_next(cmd)
        except Exception as exc:
            if producer is not None and renewal.needs_renewal(exc, producer):
                await renewal.renew(producer)
            raise
        if isinstance(result, asyncio.Future):
            result.add_done_callback(lambda done: renewal.renew_after(done, producer))
        return result


def _sender_stopped(producer: AIOKafkaProducer) -> bool:
    """aiokafka's sender task ended by an error: every later publish fails with a copy of it."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is not None and task.done() and not producer._closed


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout=30)
    except Exception:
        log.warning("stopping a replaced Kafka producer failed", exc_info=True)
