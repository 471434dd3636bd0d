"""Kafka TLS and SASL: from the KAFKA_* variables, through a service's settings and its
composition root, to FastStream's security object and the same keyword arguments for raw
aiokafka clients; incomplete settings stop start-up naming the variable."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from kefu_shared.broker import (
    aiokafka_security_options,
    kafka_security,
    kafka_security_from_environment,
    make_broker,
)
from kefu_shared.dead_letter import RetryPolicy
from kefu_shared.lag import ConsumerLagMonitor
from kefu_shared.observability import make_tracer_provider
from kefu_shared.runtime import build_runtime
from kefu_shared.settings import (
    KafkaSecuritySettings,
    ServiceSettings,
    SettingsError,
    load_settings,
)
from prometheus_client import CollectorRegistry
from pydantic_settings import SettingsConfigDict

ENV = (
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE",
    "KAFKA_SSL_KEYFILE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    """A CA certificate and a client certificate with its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kefu test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
    }
    files["ca"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return {k: str(v) for k, v in files.items()}


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    config = kafka_security_from_environment()
    assert config.kafka_security_protocol == "PLAINTEXT"
    assert kafka_security(config) is None
    assert aiokafka_security_options(config) == {}


def test_tls_verifies_the_brokers_with_the_configured_ca_and_presents_a_client_certificate(
    pki: dict[str, str],
) -> None:
    config = KafkaSecuritySettings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki["ca"],
        kafka_ssl_certfile=pki["cert"],
        kafka_ssl_keyfile=pki["key"],
    )
    security = kafka_security(config)
    assert type(security) is BaseSecurity
    assert security.use_ssl
    context = security.ssl_context
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kefu test CA"),),)]
    options = aiokafka_security_options(config)
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


@pytest.mark.parametrize(
    ("mechanism", "kind"),
    [("PLAIN", SASLPlaintext), ("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512)],
)
def test_sasl_over_tls_maps_each_mechanism_for_the_broker_and_raw_clients(
    monkeypatch: pytest.MonkeyPatch, mechanism: str, kind: type[BaseSecurity]
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", mechanism)
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "kefu-orders")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    config = kafka_security_from_environment()
    assert "s3cret" not in repr(config)  # a secret: never printed with the settings
    security = kafka_security(config)
    assert type(security) is kind
    assert security.ssl_context is not None  # system CAs when no CA file is given
    assert aiokafka_security_options(config) | {"ssl_context": None} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "kefu-orders",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }


def test_sasl_without_tls_sends_no_tls_options() -> None:
    config = KafkaSecuritySettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    options = aiokafka_security_options(config)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["ssl_context"] is None
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "kefu"},
            "KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "KAFKA_SASL_USERNAME"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nope/ca.pem"},
            "KAFKA_SSL_CAFILE",
        ),
        ({"KAFKA_SSL_CAFILE": "/etc/hosts"}, "KAFKA_SSL_CAFILE"),  # a CA without TLS
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"},
            "KAFKA_SASL_MECHANISM",
        ),
    ],
)
def test_incomplete_security_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    named: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        kafka_security_from_environment()
    assert named in capsys.readouterr().err


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_DEMO_", extra="ignore", frozen=True)


def _service_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:1")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "kefu-demo")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw")


async def test_a_services_settings_carry_the_security_into_its_broker_and_lag_monitor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _service_environment(monkeypatch)
    settings = load_settings(DemoSettings)
    assert settings.kafka_sasl_username == "kefu-demo"
    assert "pw" not in repr(settings)
    # From here on only the settings object speaks: the environment says plaintext.
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    assert aiokafka_security_options(kafka_security_from_environment()) == {}
    runtime = build_runtime("demo", settings)
    try:
        assert type(runtime.broker.specification.security) is SASLScram256
        consumers = runtime.broker.config.broker_config.builder.keywords  # what consumers use
        assert consumers["security_protocol"] == "SASL_SSL"
        assert consumers["sasl_mechanism"] == "SCRAM-SHA-256"
        assert consumers["sasl_plain_username"] == "kefu-demo"
        assert isinstance(consumers["ssl_context"], ssl.SSLContext)
        options = runtime.lag_monitor()._options
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-256"
        assert options["sasl_plain_username"] == "kefu-demo"
        assert options["sasl_plain_password"] == "pw"
        assert isinstance(options["ssl_context"], ssl.SSLContext)
    finally:
        await runtime.mongo.close()


def test_without_settings_the_broker_and_the_lag_monitor_connect_in_plaintext(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _service_environment(monkeypatch)  # read by ServiceSettings only, not by these two
    broker = make_broker(
        service="demo",
        bootstrap_servers="kafka:9093",
        registry=CollectorRegistry(),
        tracer_provider=make_tracer_provider("demo"),
        retry=RetryPolicy(attempts=1, initial_backoff=0.1, max_backoff=0.1),
    )
    assert broker.specification.security is None
    assert "sasl_mechanism" not in broker.config.broker_config.builder.keywords
    monitor = ConsumerLagMonitor(
        bootstrap_servers="kafka:9093", groups=list, registry=CollectorRegistry(), service="demo"
    )
    assert monitor._options == {}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_SASL_PASSWORD": ""}, "KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SSL_CAFILE": "/nope/ca.pem"}, "KAFKA_SSL_CAFILE"),
    ],
)
def test_a_services_settings_refuse_incomplete_security_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    named: str,
) -> None:
    _service_environment(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings(DemoSettings)
    assert named in capsys.readouterr().err


def test_a_services_prefix_does_not_rename_the_kafka_security_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _service_environment(monkeypatch)
    monkeypatch.setenv("KEFU_DEMO_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert load_settings(DemoSettings).kafka_security_protocol == "SASL_SSL"
