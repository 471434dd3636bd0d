"""Batch subscribers: many records per fetch and one offset commit per batch, each record still
handled on its own.

FastStream's single-message subscriber fetches, handles and commits one record at a time: at a
few hundred messages a second that is a fetch and an OffsetCommit round trip per message, per
consumer group. A batch subscriber takes what the partitions hold (up to ``max_records``) and
commits once after the whole batch. Inside it, each record keeps what the kernel promises for a
message: its own trace and correlation id, its own retries, its own dead letter with the reason
(``DeadLetterConfig.handle``), so one poison record never holds up or loses the others.

Records of one key (one aggregate: an inquiry's customer, a delivery's customer) are handled in
their order; different keys at once, up to ``concurrency``. A crash or a stop in the middle of
a batch commits nothing of it: the batch comes again and the idempotent handlers skip what they
had done.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import SkipValidation, TypeAdapter

from kefu_shared.correlation import current_correlation_id
from kefu_shared.dead_letter import DeadLetterConfig, RetryAndDeadLetterMiddleware
from kefu_shared.tracing import continue_trace

HandleOne = Callable[[Any], Awaitable[object]]

DEFAULT_MAX_RECORDS = 100
# FastStream's batch loop waits this long for records and, when none came, sleeps as long again
# before the next fetch: a record arriving then waits up to twice this. 200 ms (its default)
# put ~100 ms on every stage of a journey at low load; 10 ms costs ~50 idle wake-ups a second.
DEFAULT_WAIT_MS = 10
# What a gathering fetch waits for unless its time is up first: more than a trickle of events.
GATHER_MIN_BYTES = 1 << 20


def dead_letters_of(broker: KafkaBroker) -> DeadLetterConfig:
    """The retry and dead-letter configuration ``make_broker`` gave this broker."""
    for middleware in broker.middlewares:
        if isinstance(middleware, type) and issubclass(middleware, RetryAndDeadLetterMiddleware):
            return middleware.config
    raise LookupError("this broker has no RetryAndDeadLetterMiddleware (use make_broker)")


class RecordBatchHandler:
    """Decodes each record of a batch as ``model`` and hands it to ``handle``."""

    def __init__(
        self,
        model: Any,
        handle: HandleOne,
        *,
        dead_letters: DeadLetterConfig,
        tracer_provider: TracerProvider,
        concurrency: int,
    ) -> None:
        self._decode = TypeAdapter(model).validate_json
        self._handle = handle
        self._dead_letters = dead_letters
        self._tracer = tracer_provider.get_tracer(__name__)
        self._concurrency = max(concurrency, 1)

    async def __call__(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        # One sequence per (partition, key): a key's records in their order.
        sequences: dict[tuple[str, int, Any], list[ConsumerRecord[Any, Any]]] = {}
        for record in records:
            sequences.setdefault((record.topic, record.partition, record.key), []).append(record)
        room = asyncio.Semaphore(self._concurrency)

        async def sequence(items: list[ConsumerRecord[Any, Any]]) -> None:
            async with room:
                await self._in_order(items)

        await asyncio.gather(*(sequence(items) for items in sequences.values()))

    async def _in_order(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        for record in records:
            await self._one(record)

    async def _one(self, record: ConsumerRecord[Any, Any]) -> None:
        try:
            headers = {
                name: value.decode() if isinstance(value, bytes) else str(value)
                for name, value in record.headers or ()
            }
        except UnicodeDecodeError as exc:
            # Headers that are not UTF-8 break the contract, as a single record's do.
            await self._dead_letters.dead_letter(record, exc, 1)
            return
        # The producer's trace continues here and the record's correlation id goes into the
        # logs, as the single-message middlewares do for an unbatched record.
        with (
            continue_trace(headers),
            self._tracer.start_as_current_span(
                f"{record.topic} process",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.destination.name": record.topic,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                },
            ),
        ):
            token = current_correlation_id.set(headers.get("correlation_id"))
            try:
                await self._dead_letters.handle(record, lambda: self._decoded(record))
            finally:
                current_correlation_id.reset(token)

    async def _decoded(self, record: ConsumerRecord[Any, Any]) -> object:
        # Decoding is inside the retried call: a body that does not parse or fails its
        # contract is a permanent error, so it is dead-lettered with pydantic's reason.
        return await self._handle(self._decode(record.value or b""))


def batch_subscriber(
    broker: KafkaBroker,
    *topics: str,
    model: Any,
    handle: HandleOne,
    tracer_provider: TracerProvider,
    concurrency: int,
    max_records: int = DEFAULT_MAX_RECORDS,
    wait_ms: int = DEFAULT_WAIT_MS,
    gather_ms: int = 0,
    title: str,
    description: str = "",
    **options: Any,
) -> RecordBatchHandler:
    """Subscribe ``handle`` to ``topics`` in batches: each record decoded as ``model`` (e.g.
    ``Envelope[NotificationRequested]``) and handled alone, the offsets committed per batch.
    ``options`` are the service's subscriber options (group, offset reset).

    ``gather_ms`` > 0 lets the broker hold a fetch up to that long to gather records (Kafka's
    ``fetch.max.wait.ms``, with a ``fetch.min.bytes`` a trickle does not reach): for a consumer
    whose records may be that much later, one fetch and one commit for what trickled in
    meanwhile instead of one each per record."""
    if gather_ms:
        options = {"fetch_max_wait_ms": gather_ms, "fetch_min_bytes": GATHER_MIN_BYTES, **options}
    handler = RecordBatchHandler(
        model,
        handle,
        dead_letters=dead_letters_of(broker),
        tracer_provider=tracer_provider,
        concurrency=concurrency,
    )

    async def on_batch(records: Any) -> None:
        await handler(records)

    # The topic carries single ``model`` records, and that is what AsyncAPI should say; the
    # body is not validated here (``_raw_records`` gives the records themselves, so the handler
    # needs no ``Context("message")``: fast_depends resolves that sync dependency in a worker
    # thread, a thread hop and a loop wake-up per batch): each record is validated alone.
    on_batch.__annotations__["records"] = Annotated[model, SkipValidation]

    on_batch.__name__ = f"on_{title.replace('-', '_')}_batch"
    subscriber = broker.subscriber(
        *topics,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=wait_ms,
        title=title,
        description=description,
        **options,
    )
    subscriber(on_batch, parser=_tolerant_parser, decoder=_raw_records)
    return handler


Records = tuple[ConsumerRecord[Any, Any], ...]


async def _tolerant_parser(
    records: Records, parse: Callable[[Records], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """FastStream's batch parser decodes every record's headers strictly: one header that is
    not UTF-8 would fail the whole batch, again at every redelivery. Such a batch is parsed
    with those bytes replaced, and the handler dead-letters the record that carried them."""
    try:
        return await parse(records)
    except UnicodeDecodeError:
        message = await parse(tuple(_readable_headers(r) for r in records))
        message.raw_message = records  # the originals: those go to the dead-letter topic
        return message


def _readable_headers(record: ConsumerRecord[Any, Any]) -> ConsumerRecord[Any, Any]:
    headers = [
        (name, value.decode(errors="replace").encode() if isinstance(value, bytes) else value)
        for name, value in record.headers or ()
    ]
    return dataclasses.replace(record, headers=headers)


async def _raw_records(message: StreamMessage[Any]) -> Records:
    """The batch's records, undecoded: a record that is not JSON must not fail the whole batch."""
    raw = message.raw_message
    return raw if isinstance(raw, tuple) else (raw,)
