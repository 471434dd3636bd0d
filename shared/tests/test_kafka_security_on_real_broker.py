"""Kafka TLS and SASL against a real broker: the local runner's Kafka with a SASL_SSL listener
(PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512), an SSL listener requiring client certificates and a
SASL_PLAINTEXT listener (certificates from a CA made here) carries the services' broker and the
raw aiokafka clients, and refuses a wrong password, a client that does not trust it, and a
client without a certificate where one is required."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

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
PLAIN_PORT, CONTROLLER_PORT, SASL_SSL_PORT, MTLS_PORT, SASL_PLAINTEXT_PORT = range(29292, 29297)
SASL_SSL_BOOTSTRAP = f"127.0.0.1:{SASL_SSL_PORT}"
MTLS_BOOTSTRAP = f"127.0.0.1:{MTLS_PORT}"
SASL_PLAINTEXT_BOOTSTRAP = f"127.0.0.1:{SASL_PLAINTEXT_PORT}"
USER, PASSWORD = "kefu-orders", "orders-secret-1"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
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

    def client(self, listener: str) -> tuple[str, KafkaSecuritySettings]:
        """The bootstrap address and the settings a service would use on one listener."""
        if listener.startswith("SASL_SSL "):
            mechanism = cast(KafkaSaslMechanism, listener.removeprefix("SASL_SSL "))
            return SASL_SSL_BOOTSTRAP, self.security(mechanism)
        if listener == "SSL with a client certificate":
            return MTLS_BOOTSTRAP, KafkaSecuritySettings(
                kafka_security_protocol="SSL",
                kafka_ssl_cafile=str(self.pki.ca_file),
                kafka_ssl_certfile=str(self.pki.client_cert_file),
                kafka_ssl_keyfile=str(self.pki.client_key_file),
            )
        assert listener == "SASL_PLAINTEXT SCRAM-SHA-512", listener
        return SASL_PLAINTEXT_BOOTSTRAP, KafkaSecuritySettings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username=USER,
            kafka_sasl_password=SecretStr(PASSWORD),
        )


def _sasl_properties(listener: str) -> dict[str, str]:
    prefix = f"listener.name.{listener}."
    return {
        f"{prefix}sasl.enabled.mechanisms": ",".join(MECHANISMS),
        f"{prefix}plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{PASSWORD}";'
        ),
        **{
            f"{prefix}{mechanism.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
            for mechanism in MECHANISMS[1:]
        },
    }


def _tls_properties(listener: str, pki: Pki) -> dict[str, str]:
    # PEM straight from `cryptography`, no keytool. Inline rather than a key store file: Kafka
    # wants a file's key encrypted, and the JDK cannot read the PBES2 encryption
    # `cryptography` writes ("PBES2 SecretKeyFactory not available").
    prefix = f"listener.name.{listener}."
    return {
        f"{prefix}ssl.keystore.type": "PEM",
        f"{prefix}ssl.keystore.key": pki.server_key_file.read_text(),
        f"{prefix}ssl.keystore.certificate.chain": pki.server_cert_file.read_text(),
    }


def secure_node(pki: Pki) -> kafka.KafkaNode:
    """One broker, three secured listeners beside the runner's PLAINTEXT one."""
    return kafka.KafkaNode(
        paths.default_state_dir(PROFILE),
        port=PLAIN_PORT,
        controller_port=CONTROLLER_PORT,
        extra_listeners=(
            kafka.KafkaListener("SASL_SSL", SASL_SSL_PORT, "SASL_SSL"),
            kafka.KafkaListener("MTLS", MTLS_PORT, "SSL"),
            kafka.KafkaListener("SASL_PLAINTEXT", SASL_PLAINTEXT_PORT, "SASL_PLAINTEXT"),
        ),
        extra_properties={
            **_sasl_properties("sasl_ssl"),
            **_tls_properties("sasl_ssl", pki),
            **_tls_properties("mtls", pki),
            # Client certificates signed by the test CA, and no connection without one.
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.mtls.ssl.truststore.type": "PEM",
            "listener.name.mtls.ssl.truststore.certificates": pki.ca_file.read_text(),
            **_sasl_properties("sasl_plaintext"),
        },
        scram_users=tuple(
            f"{mechanism}=[name={USER},password={PASSWORD}]" for mechanism in MECHANISMS[1:]
        ),
    )


async def _answers(options: dict[str, Any]) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=SASL_SSL_BOOTSTRAP, request_timeout_ms=5000, **options
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
    for port in range(PLAIN_PORT, SASL_PLAINTEXT_PORT + 1):
        if port_open("127.0.0.1", port, timeout=0.3):
            raise InfraError(f"port {port} is taken: the secured test broker needs it")
    jars = kafka.ensure_jars()
    pid = await asyncio.to_thread(node.start, jars)
    broker = SecureBroker(node, pki)
    try:
        options = aiokafka_security_options(broker.security())
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not await _answers(options):
            if node.running_pid() is None or time.monotonic() > deadline:
                raise InfraError(
                    "the secured broker did not answer; last log lines:\n"
                    + tail(node.log_file)
                    + "\n"
                    + tail(node.console_file, 15)
                )
            await asyncio.sleep(0.5)
        yield broker
    finally:
        await asyncio.to_thread(stop, [pid])


def new_broker(
    security: KafkaSecuritySettings, bootstrap_servers: str = SASL_SSL_BOOTSTRAP
) -> KafkaBroker:
    return make_broker(
        service="securitycheck",
        bootstrap_servers=bootstrap_servers,
        registry=CollectorRegistry(),
        tracer_provider=make_tracer_provider("securitycheck"),
        retry=RetryPolicy(attempts=2, initial_backoff=0.1, max_backoff=0.2),
        security=security,
    )


@pytest.mark.parametrize(
    "listener",
    [
        *(f"SASL_SSL {mechanism}" for mechanism in MECHANISMS),
        "SSL with a client certificate",
        "SASL_PLAINTEXT SCRAM-SHA-512",
    ],
)
async def test_the_services_broker_publishes_and_consumes_over_each_secured_listener(
    secure_broker: SecureBroker, listener: str
) -> None:
    bootstrap, security = secure_broker.client(listener)
    topic = f"kefu.security.{uuid.uuid4().hex[:8]}"
    broker = new_broker(security, bootstrap)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(body: bytes) -> None:
        await received.put(body)

    broker.subscriber(topic, **subscriber_options("securitycheck", f"g-{topic}"))(on_message)
    async with broker:
        await broker.start()
        await broker.publish(listener.encode(), topic=topic, key=b"k")
        assert await asyncio.wait_for(received.get(), 30) == listener.encode()


async def test_the_lag_monitor_and_raw_clients_work_over_sasl_ssl(
    secure_broker: SecureBroker,
) -> None:
    options = aiokafka_security_options(secure_broker.security())
    topic, group = f"kefu.security.lag.{uuid.uuid4().hex[:8]}", f"g-lag-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=SASL_SSL_BOOTSTRAP, **options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=SASL_SSL_BOOTSTRAP, acks="all", **options)
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, b"m%d" % i)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=SASL_SSL_BOOTSTRAP,
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
        bootstrap_servers=SASL_SSL_BOOTSTRAP,
        groups=lambda: [group],
        registry=CollectorRegistry(),
        service="securitycheck",
        client_options=options,
    )
    assert await monitor.measure_once() == {(group, topic, 0): 3}


@pytest.mark.parametrize("mechanism", MECHANISMS)
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
        bootstrap_servers=SASL_SSL_BOOTSTRAP,
        groups=lambda: ["any"],
        registry=CollectorRegistry(),
        service="securitycheck",
        client_options=aiokafka_security_options(untrusted),
    )
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(monitor.measure_once(), REFUSAL_SECONDS)


async def test_a_client_without_a_certificate_is_refused_where_one_is_required(
    secure_broker: SecureBroker,
) -> None:
    bootstrap, security = secure_broker.client("SSL with a client certificate")
    anonymous = security.model_copy(update={"kafka_ssl_certfile": "", "kafka_ssl_keyfile": ""})
    broker = new_broker(anonymous, bootstrap)
    log_file = secure_broker.node.log_file
    seen = log_file.stat().st_size
    started = time.monotonic()
    # Under TLS 1.3 the client's handshake completes before the broker checks for its
    # certificate, so aiokafka only sees the connection closed; the broker says why.
    with pytest.raises(KafkaConnectionError):
        async with broker:
            await asyncio.wait_for(broker.start(), REFUSAL_SECONDS)
    assert time.monotonic() - started < REFUSAL_SECONDS
    refusal, lines = f"127.0.0.1:{MTLS_PORT}-", list[str]()
    while time.monotonic() - started < REFUSAL_SECONDS:
        with log_file.open("rb") as log:
            log.seek(seen)
            lines = log.read().decode(errors="replace").splitlines()
        if any(refusal in line and "SSL handshake failed" in line for line in lines):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the broker logged no failed handshake on {MTLS_PORT}: {lines[-5:]}")
