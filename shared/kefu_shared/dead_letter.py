"""Retries with backoff and the dead-letter topic, as a FastStream broker middleware.

FastStream's Kafka acknowledgement either commits before handling (at most once) or seeks back
at once on error (a hot loop on a poison message). This middleware sits inside the ack: it
retries a failing handler with exponential backoff, and when a message is poison (it does not
parse, fails its contract, or keeps failing) it publishes the original bytes to the service's
dead-letter topic with the reason and returns normally, so the offset is committed and the
partition moves on. Outages of the store or broker are not the message's fault: those are
retried without limit (capped backoff) and never dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    NodeNotReadyError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
)
from faststream import BaseMiddleware
from faststream.message import StreamMessage
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError

from kefu_shared.correlation import current_correlation_id
from kefu_shared.envelope import utcnow
from kefu_shared.producer_renewal import PRODUCER_STATE_ERRORS

log = logging.getLogger(__name__)

# Failures of a dependency, not of the message: retry until it is back.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    AutoReconnect,
    ServerSelectionTimeoutError,
    KafkaConnectionError,
    KafkaTimeoutError,
    # A broker restarting: its partitions have no leader for a moment.
    LeaderNotAvailableError,
    NotLeaderForPartitionError,
    NodeNotReadyError,
    RequestTimedOutError,
    # The producer is being replaced (producer_renewal); the retry publishes with the new one.
    *PRODUCER_STATE_ERRORS,
)


class PoisonMessage(Exception):
    """Raise from a handler for a message that can never be processed; it goes to the DLQ now."""


PERMANENT_ERRORS: tuple[type[BaseException], ...] = (ValidationError, PoisonMessage, ValueError)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 5.0

    def backoff(self, attempt: int) -> float:
        """Exponential with full jitter (attempt counts from 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class DeadLetter:
    record: ConsumerRecord[Any, Any]
    reason: str
    error_type: str
    attempts: int
    service: str

    def headers(self) -> dict[str, str]:
        original = {
            k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            for k, v in (self.record.headers or ())
        }
        return {
            **original,
            "x-dlq-reason": self.reason[:2000],
            "x-dlq-error-type": self.error_type,
            "x-dlq-service": self.service,
            "x-original-topic": self.record.topic,
            "x-original-partition": str(self.record.partition),
            "x-original-offset": str(self.record.offset),
            "x-attempts": str(self.attempts),
            "x-failed-at": utcnow().isoformat(),
        }


SendDeadLetter = Callable[[DeadLetter], Awaitable[None]]


class ConsumeMetrics:
    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self._dead = Counter(
            "kefu_dead_letters_total",
            "Messages sent to the dead-letter topic, by original topic and error type.",
            ["service", "topic", "error_type"],
            registry=registry,
        )
        self._retries = Counter(
            "kefu_message_retries_total",
            "Handler retries, by original topic and kind (transient outage or handler error).",
            ["service", "topic", "kind"],
            registry=registry,
        )
        self._service = service

    def dead(self, topic: str, error_type: str) -> None:
        self._dead.labels(self._service, topic, error_type).inc()

    def retry(self, topic: str, kind: str) -> None:
        self._retries.labels(self._service, topic, kind).inc()


@dataclass
class DeadLetterConfig:
    """How a service handles one consumed record: retries, then its dead-letter topic."""

    service: str
    policy: RetryPolicy
    send: SendDeadLetter
    metrics: ConsumeMetrics

    async def handle(
        self, record: ConsumerRecord[Any, Any] | None, call: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Run ``call`` for ``record`` until it succeeds; dead-letter the record (and return
        None) when it is poison. Outages are retried without limit. ``record`` None (a test
        message) lets a permanent failure raise instead."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await call()
                # One line per handled message, carrying its correlation and trace ids:
                # how a customer's journey is followed through every service's log.
                log.info("handled %s from %s", _event_type(record), _topic(record))
                return result
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                # Not the message's fault: wait for the dependency, never dead-letter.
                delay = self.policy.backoff(min(attempt, 10))
                log.warning("dependency unavailable (%s); retrying in %.1fs", exc, delay)
                self.metrics.retry(_topic(record), "transient")
                await asyncio.sleep(delay)
            except PERMANENT_ERRORS as exc:
                await self.dead_letter(record, exc, attempt)
                return None
            except Exception as exc:
                if attempt >= self.policy.attempts:
                    await self.dead_letter(record, exc, attempt)
                    return None
                delay = self.policy.backoff(attempt)
                log.warning(
                    "handler failed (attempt %d): %r; retrying in %.2fs", attempt, exc, delay
                )
                self.metrics.retry(_topic(record), "error")
                await asyncio.sleep(delay)

    async def dead_letter(
        self, record: ConsumerRecord[Any, Any] | None, exc: BaseException, attempts: int
    ) -> None:
        if record is None:
            raise exc  # a test message without a record: let the ack policy decide
        letter = DeadLetter(
            record=record,
            reason=_reason(exc),
            error_type=type(exc).__name__,
            attempts=attempts,
            service=self.service,
        )
        log.error(
            "dead-lettering %s[%d]@%d after %d attempt(s): %s",
            record.topic,
            record.partition,
            record.offset,
            attempts,
            letter.reason,
        )
        await self.send(letter)
        self.metrics.dead(record.topic, letter.error_type)


class RetryAndDeadLetterMiddleware(BaseMiddleware):
    """Use ``dead_letter_middleware(config)`` to get the factory a broker takes."""

    config: DeadLetterConfig  # set on the subclass the factory makes

    async def consume_scope(
        self, call_next: Callable[[StreamMessage[Any]], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        if isinstance(self.msg, tuple):
            # A batch: its handler runs ``config.handle`` per record (``kefu_shared.batches``),
            # so one poison record goes to the DLQ and the rest of the batch is handled.
            return await call_next(msg)
        token = current_correlation_id.set(msg.correlation_id)
        try:
            return await self.config.handle(self._record(), lambda: call_next(msg))
        finally:
            current_correlation_id.reset(token)

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        # Errors while decoding or matching a message happen outside consume_scope.
        if isinstance(exc_val, Exception) and not isinstance(exc_val, TRANSIENT_ERRORS):
            await self.config.dead_letter(self._record(), exc_val, 1)
            return True
        return False

    def _record(self) -> ConsumerRecord[Any, Any] | None:
        return self.msg if isinstance(self.msg, ConsumerRecord) else None


def dead_letter_middleware(config: DeadLetterConfig) -> type[RetryAndDeadLetterMiddleware]:
    return type("BoundRetryAndDeadLetter", (RetryAndDeadLetterMiddleware,), {"config": config})


def _topic(record: ConsumerRecord[Any, Any] | None) -> str:
    return record.topic if record is not None else "unknown"


def _event_type(record: ConsumerRecord[Any, Any] | None) -> str:
    for name, value in (record.headers or ()) if record is not None else ():
        if name == "ce_type":
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return "a message"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors()[:10]:
            loc = ".".join(str(p) for p in err["loc"]) or "(message)"
            parts.append(f"{loc}: {err['msg']}")
        return "invalid message: " + "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"
