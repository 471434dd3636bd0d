"""Kafka TLS and SASL against a real broker: the local runner's Kafka with a SASL_SSL listener
(PLAIN and SCRAM-SHA-512, a certificate from a CA made here) carries the services' broker and
the raw aiokafka clients, and refuses a wrong password or a client that does not trust it."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faststream.kafka import KafkaBroker
from kefu_local import kafka, paths
from kefu_local.process import InfraError, port_open, stop, tail
from kefu_shared.broker import aiokafka_security_options, make_broker, subscriber_options
from kefu_shared.dead_letter import RetryPolicy
from kefu_shared.lag import ConsumerLagMonitor
from kefu_shared.observability import make_tracer_provider
from kefu_shared.settings import KafkaSaslMechanism, KafkaSecuritySettings
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from tls_testkit import Pki, make_pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# A profile and ports of its own (no other profile uses 2929x), below Linux's ephemeral range.
PROFILE = "kafka-security"
PLAIN_PORT, CONTROLLER_PORT, SECURE_PORT = 29292, 29293, 29294
SECURE_BOOTSTRAP = f"127.0.0.1:{SECURE_PORT}"
USER, PASSWORD = "kefu-orders", "orders-secret-1"
START_TIMEOUT_SECONDS = 90.0
# aiokafka gives up on an unreachable bootstrap list after one attempt per host.
REFUSAL_SECONDS = 15.0


@dataclass(frozen=True)
class SecureBroker:
    node: kafka.KafkaNode
    pki: Pki

    def security(
        self,
        mechanism: KafkaSaslMechanism = "SCRAM-SHA-512",
        *,
        password: str = PASSWORD,
        cafile: str = "",
    ) -> KafkaSecuritySettings:
        """What a service would read from KAFKA_SECURITY_PROTOCOL=SASL_SSL and the rest."""
        return KafkaSecuritySettings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username=USER,
            kafka_sasl_password=SecretStr(password),
            kafka_ssl_cafile=cafile or str(self.pki.ca_file),
        )


def secure_node(pki: Pki) -> kafka.KafkaNode:
    listener = "listener.name.sasl_ssl."
    return kafka.KafkaNode(
        paths.default_state_dir(PROFILE),
        port=PLAIN_PORT,
        controller_port=CONTROLLER_PORT,
        extra_listeners=(kafka.KafkaListener("SASL_SSL", SECURE_PORT, "SASL_SSL"),),
        extra_properties={
            f"{listener}sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
            f"{listener}plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{USER}="{PASSWORD}";'
            ),
            f"{listener}scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            # PEM straight from `cryptography`, no keytool. Inline rather than a key store
            # file: Kafka wants a file's key encrypted, and the JDK cannot read the PBES2
            # encryption `cryptography` writes ("PBES2 SecretKeyFactory not available").
            f"{listener}ssl.keystore.type": "PEM",
            f"{listener}ssl.keystore.key": pki.server_key_file.read_text(),
            f"{listener}ssl.keystore.certificate.chain": pki.server_cert_file.read_text(),
        },
        scram_users=(f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",),
    )


async def _answers(options: dict[str, Any]) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=SECURE_BOOTSTRAP, request_timeout_ms=5000, **options
    )
    try:
        await admin.start()
        return bool(await admin.describe_cluster())
    except KafkaConnectionError:
        return False
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def secure_broker() -> AsyncIterator[SecureBroker]:
    state_dir = paths.default_state_dir(PROFILE)
    pki = make_pki(state_dir / "pki")
    node = secure_node(pki)
    leftover = node.running_pid()
    if leftover is not None:  # an interrupted earlier run
        stop([leftover])
    # Formatted afresh every time: SCRAM users are written at format time, and the
    # certificates are new.
    shutil.rmtree(node.home, ignore_errors=True)
    for port in (PLAIN_PORT, CONTROLLER_PORT, SECURE_PORT):
        if port_open("127.0.0.1", port, timeout=0.3):
            raise InfraError(f"port {port} is taken: the SASL_SSL test broker needs it")
    jars = kafka.ensure_jars()
    pid = await asyncio.to_thread(node.start, jars)
    broker = SecureBroker(node, pki)
    try:
        options = aiokafka_security_options(broker.security())
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not await _answers(options):
            if node.running_pid() is None or time.monotonic() > deadline:
                raise InfraError(
                    "the SASL_SSL broker did not answer; last log lines:\n"
                    + tail(node.log_file)
                    + "\n"
                    + tail(node.console_file, 15)
                )
            await asyncio.sleep(0.5)
        yield broker
    finally:
        await asyncio.to_thread(stop, [pid])


def new_broker(security: KafkaSecuritySettings) -> KafkaBroker:
    return make_broker(
        service="securitycheck",
        bootstrap_servers=SECURE_BOOTSTRAP,
        registry=CollectorRegistry(),
        tracer_provider=make_tracer_provider("securitycheck"),
        retry=RetryPolicy(attempts=2, initial_backoff=0.1, max_backoff=0.2),
        security=security,
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_the_services_broker_publishes_and_consumes_over_sasl_ssl(
    secure_broker: SecureBroker, mechanism: KafkaSaslMechanism
) -> None:
    topic = f"kefu.security.{mechanism.lower()}.{uuid.uuid4().hex[:8]}"
    broker = new_broker(secure_broker.security(mechanism))
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(body: bytes) -> None:
        await received.put(body)

    broker.subscriber(topic, **subscriber_options("securitycheck", f"g-{topic}"))(on_message)
    async with broker:
        await broker.start()
        await broker.publish(b"over TLS and SASL", topic=topic, key=b"k")
        assert await asyncio.wait_for(received.get(), 30) == b"over TLS and SASL"


async def test_the_lag_monitor_and_raw_clients_work_over_sasl_ssl(
    secure_broker: SecureBroker,
) -> None:
    options = aiokafka_security_options(secure_broker.security())
    topic, group = f"kefu.security.lag.{uuid.uuid4().hex[:8]}", f"g-lag-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=SECURE_BOOTSTRAP, **options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=SECURE_BOOTSTRAP, acks="all", **options)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, b"m%d" % i)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=SECURE_BOOTSTRAP,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    await consumer.start()
    try:  # the group reads two of the five and commits them
        assert (await consumer.getone()).value == b"m0"
        assert (await consumer.getone()).value == b"m1"
        await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
    finally:
        await consumer.stop()

    monitor = ConsumerLagMonitor(
        bootstrap_servers=SECURE_BOOTSTRAP,
        groups=lambda: [group],
        registry=CollectorRegistry(),
        service="securitycheck",
        client_options=options,
    )
    assert await monitor.measure_once() == {(group, topic, 0): 3}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_a_wrong_password_is_refused_at_start_with_the_reason_logged(
    secure_broker: SecureBroker, mechanism: KafkaSaslMechanism, caplog: pytest.LogCaptureFixture
) -> None:
    broker = new_broker(secure_broker.security(mechanism, password="not-the-password"))
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        async with broker:
            await asyncio.wait_for(broker.start(), REFUSAL_SECONDS)
    assert time.monotonic() - started < REFUSAL_SECONDS
    assert "SaslAuthenticationFailed" in caplog.text, caplog.text


async def test_a_client_that_does_not_trust_the_brokers_ca_is_refused(
    secure_broker: SecureBroker, caplog: pytest.LogCaptureFixture
) -> None:
    untrusted = secure_broker.security(cafile=str(secure_broker.pki.untrusted_ca_file))
    broker = new_broker(untrusted)
    with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
        async with broker:
            await asyncio.wait_for(broker.start(), REFUSAL_SECONDS)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text
    # The lag monitor's raw clients refuse it the same way.
    monitor = ConsumerLagMonitor(
        bootstrap_servers=SECURE_BOOTSTRAP,
        groups=lambda: ["any"],
        registry=CollectorRegistry(),
        service="securitycheck",
        client_options=aiokafka_security_options(untrusted),
    )
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(monitor.measure_once(), REFUSAL_SECONDS)
