"""The Kafka broker every service uses: idempotent producer, at-least-once consumption, and
the connection's TLS/SASL (``KafkaSecuritySettings``) for it and every raw aiokafka client."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.kafka.security import parse_security
from faststream.middlewares import AckPolicy
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
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
from kefu_shared.producer_renewal import ProducerRenewal
from kefu_shared.settings import KafkaSecuritySettings, load_settings
from kefu_shared.topics import dead_letter_topic
from kefu_shared.tracing import continue_trace

_SASL = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}


def kafka_security_from_environment() -> KafkaSecuritySettings:
    """The ``KAFKA_SECURITY_PROTOCOL``... variables alone, for a process without
    ``ServiceSettings`` (which carry them); a bad combination exits naming them."""
    return load_settings(KafkaSecuritySettings)


def tls_context(config: KafkaSecuritySettings) -> ssl.SSLContext:
    """Verifies the brokers (the CA file, else the system's CAs); presents a client cert."""
    context = ssl.create_default_context(cafile=config.kafka_ssl_cafile or None)
    if config.kafka_ssl_certfile:
        context.load_cert_chain(config.kafka_ssl_certfile, config.kafka_ssl_keyfile or None)
    return context


def kafka_security(config: KafkaSecuritySettings) -> BaseSecurity | None:
    """FastStream's security object for the broker; None for PLAINTEXT."""
    context = tls_context(config) if config.uses_tls else None
    if config.uses_sasl:
        sasl = _SASL[config.kafka_sasl_mechanism]
        return sasl(
            config.kafka_sasl_username,
            config.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=config.uses_tls,
        )
    if context is not None:
        return BaseSecurity(ssl_context=context)
    return None


def aiokafka_security_options(config: KafkaSecuritySettings) -> dict[str, Any]:
    """The same security as keyword arguments of a raw aiokafka client (admin, consumer,
    producer): derived from the broker's object by FastStream's own mapping, so they agree."""
    return parse_security(kafka_security(config))


def make_broker(
    *,
    service: str,
    bootstrap_servers: str,
    registry: CollectorRegistry,
    tracer_provider: TracerProvider,
    retry: RetryPolicy,
    topic_prefix: str = "",
    security: KafkaSecuritySettings | None = None,
    renewal: ProducerRenewal | None = None,
    request_timeout_ms: int = 40_000,
) -> KafkaBroker:
    """A broker whose subscribers commit only after handling (or dead-lettering) a message,
    and whose producer is replaced when Kafka refuses its sequence (``ProducerRenewal``).

    ``security`` is the service's settings (``ServiceSettings`` carry the ``KAFKA_*``
    security variables); None connects in plaintext.
    """
    renewal = renewal or ProducerRenewal(registry, service)
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
        security=kafka_security(security) if security is not None else None,
        client_id=f"kefu-{service}",
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=request_timeout_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        # Outer to inner: the trace and the metrics span every retry of a message.
        middlewares=(
            KafkaTelemetryMiddleware(tracer_provider=tracer_provider),
            KafkaPrometheusMiddleware(registry=registry, app_name=f"kefu-{service}"),
            dead_letter_middleware(config),
            renewal.middleware(),
        ),
        # FastStream logs through the root logger, i.e. as JSON with trace ids. Its
        # "Received" / "Processed" lines name neither the event nor its ids (for a batch, not
        # even one record), so they are debug: the kernel logs one "handled" line per record.
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
    )
    holder["broker"] = broker
    renewal.bind(broker)
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
