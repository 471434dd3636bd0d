"""The Kafka broker every service uses: idempotent producer, at-least-once consumption."""

from __future__ import annotations

import logging
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.middlewares import AckPolicy
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from kefu_shared.dead_letter import (
    ConsumeMetrics,
    DeadLetter,
    DeadLetterConfig,
    RetryPolicy,
    dead_letter_middleware,
)
from kefu_shared.outbox import OutboxMessage
from kefu_shared.topics import dead_letter_topic
from kefu_shared.tracing import continue_trace


def make_broker(
    *,
    service: str,
    bootstrap_servers: str,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider,
    retry: RetryPolicy,
    topic_prefix: str = "",
) -> KafkaBroker:
    """A broker whose subscribers commit only after handling (or dead-lettering) a message."""
    dlq_topic = topic_prefix + dead_letter_topic(service)
    holder: dict[str, KafkaBroker] = {}

    async def send_dead_letter(letter: DeadLetter) -> None:
        await holder["broker"].publish(
            letter.record.value,
            topic=dlq_topic,
            key=letter.record.key,
            headers=letter.headers(),
        )

    config = DeadLetterConfig(
        service=service,
        policy=retry,
        send=send_dead_letter,
        metrics=ConsumeMetrics(registry, service),
    )
    broker = KafkaBroker(
        bootstrap_servers,
        client_id=f"kefu-{service}",
        enable_idempotence=True,
        acks="all",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        # Outer to inner: the trace and the metrics span every retry of a message.
        middlewares=(
            KafkaTelemetryMiddleware(tracer_provider=tracer_provider),
            KafkaPrometheusMiddleware(registry=registry, app_name=f"kefu-{service}"),
            dead_letter_middleware(config),
        ),
        # FastStream logs through the root logger, i.e. as JSON with trace ids.
        logger=logging.getLogger("faststream"),
    )
    holder["broker"] = broker
    return broker


def subscriber_options(service: str, group: str = "", **overrides: Any) -> dict[str, Any]:
    """Defaults for a service's subscribers: one consumer group per service, from the start."""
    return {
        "group_id": group or f"kefu-{service}",
        "auto_offset_reset": "earliest",
        **overrides,
    }


async def publish_outbox_message(broker: KafkaBroker, message: OutboxMessage) -> None:
    """Publish a relayed event inside the trace of the change that produced it."""
    with continue_trace(message.trace):
        await broker.publish(
            message.body.encode(),
            topic=message.topic,
            key=message.key.encode(),
            headers=message.headers,
            correlation_id=message.headers.get("correlation_id"),
        )
