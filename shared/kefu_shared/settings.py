"""Service settings from the environment, with one prefix per service.

Every service reads the shared infrastructure variables without a prefix (the names Kafka and
MongoDB tooling already use: ``KAFKA_BOOTSTRAP_SERVERS``, ``MONGODB_URI``), and its own knobs
with its prefix (``KEFU_NOTIFIER_...``). A missing or malformed value stops the service at start
with a message naming the variable, instead of failing later on the first message.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Literal, Self, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kefu_shared.auth import KeyRing
from kefu_shared.crypto import FieldCipher

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSecuritySettings(BaseSettings):
    """How a kefu process reaches Kafka: TLS and SASL (``kefu_shared.broker`` applies it).

    Unprefixed ``KAFKA_*`` variables, like ``KAFKA_BOOTSTRAP_SERVERS``: the cluster's security
    is the platform's, the same for every service. ``ServiceSettings`` is one of these, so a
    service's composition root hands its settings to the broker and the lag monitor; a bad
    combination stops the service at start naming the variable.
    """

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    # The aliases keep the names unprefixed in ServiceSettings' subclasses (KEFU_<SVC>_...).
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT",
        validation_alias=AliasChoices("KAFKA_SECURITY_PROTOCOL", "kafka_security_protocol"),
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        default="SCRAM-SHA-512",
        validation_alias=AliasChoices("KAFKA_SASL_MECHANISM", "kafka_sasl_mechanism"),
        description="With SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    )
    kafka_sasl_username: str = Field(
        default="",
        validation_alias=AliasChoices("KAFKA_SASL_USERNAME", "kafka_sasl_username"),
    )
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("KAFKA_SASL_PASSWORD", "kafka_sasl_password"),
    )
    kafka_ssl_cafile: str = Field(
        default="",
        validation_alias=AliasChoices("KAFKA_SSL_CAFILE", "kafka_ssl_cafile"),
        description="CA bundle (PEM) that signed the brokers' certificates; "
        "empty trusts the system's CAs.",
    )
    kafka_ssl_certfile: str = Field(
        default="",
        validation_alias=AliasChoices("KAFKA_SSL_CERTFILE", "kafka_ssl_certfile"),
        description="Client certificate (PEM), mTLS.",
    )
    kafka_ssl_keyfile: str = Field(
        default="",
        validation_alias=AliasChoices("KAFKA_SSL_KEYFILE", "kafka_ssl_keyfile"),
        description="Its private key (PEM).",
    )

    @property
    def uses_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        protocol = self.kafka_security_protocol
        if self.uses_sasl:
            if not self.kafka_sasl_username:
                raise ValueError(
                    f"KAFKA_SASL_USERNAME is required with KAFKA_SECURITY_PROTOCOL={protocol}"
                )
            if not self.kafka_sasl_password.get_secret_value():
                raise ValueError(
                    f"KAFKA_SASL_PASSWORD is required with KAFKA_SECURITY_PROTOCOL={protocol} "
                    f"(mechanism {self.kafka_sasl_mechanism})"
                )
        for name, value in (
            ("KAFKA_SSL_CAFILE", self.kafka_ssl_cafile),
            ("KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile),
            ("KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile),
        ):
            if value and not self.uses_tls:
                raise ValueError(f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} has no TLS")
            if value and not Path(value).is_file():
                raise ValueError(f"{name}: no file {value}")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate)")
        return self


class ServiceSettings(KafkaSecuritySettings):
    """Settings every kefu service has. Subclass with ``env_prefix="KEFU_<SERVICE>_"``.

    Includes the Kafka security (``KAFKA_SECURITY_PROTOCOL``...): pass the settings as the
    ``security`` of ``make_broker`` and to ``aiokafka_security_options``.
    """

    model_config = SettingsConfigDict(env_prefix="KEFU_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
        description="Comma-separated host:port list of the Kafka brokers.",
    )
    mongodb_uri: str = Field(
        validation_alias=AliasChoices("MONGODB_URI", "mongodb_uri"),
        description="MongoDB connection string (MongoDB 7 or FerretDB).",
    )
    mongodb_database: str = Field(
        default="",
        description="Database name; defaults to kefu_<service>, one database per service.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "INFO"
    instance_id: str = Field(
        default="",
        description="Distinguishes replicas in logs and metrics; defaults to host:port.",
    )
    # Retry of a failing message before it goes to the dead-letter topic.
    retry_attempts: int = Field(default=4, ge=1, le=20)
    retry_initial_backoff_seconds: float = Field(default=0.2, gt=0, le=60)
    retry_max_backoff_seconds: float = Field(default=5.0, gt=0, le=600)
    outbox_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    outbox_sweep_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often the outbox relay scans for events a crash or a failed publish "
        "left behind; written events are handed to the relay directly.",
    )
    lag_interval_seconds: float = Field(
        default=15.0, gt=0, le=600, description="How often consumer lag is measured."
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[a-zA-Z0-9._-]*$",
        description="Prepended to every topic name: one cluster for several environments "
        "(e.g. 'staging.'), and isolated topics per test.",
    )
    consumer_group: str = Field(
        default="", description="Kafka consumer group; defaults to kefu-<service>."
    )
    otel_exporter_otlp_endpoint: str = Field(
        default="",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_exporter_otlp_endpoint"),
        description="OTLP/HTTP endpoint for traces; empty means tracing export is off.",
    )

    auth_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("KEFU_AUTH_KEYS", "auth_keys"),
        description='Token verification keys as JSON {"kid": "secret"}; empty refuses all calls.',
    )
    auth_signing_key: str = Field(
        default="",
        validation_alias=AliasChoices("KEFU_AUTH_SIGNING_KEY", "auth_signing_key"),
        description="The kid of the key that signs new tokens (for tools and service calls).",
    )

    data_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("KEFU_DATA_KEYS", "data_keys"),
        description='Field-encryption keys as JSON {"kid": "base64 AES-256 key"}; '
        "empty stores personal data unencrypted (local demo only).",
    )
    data_key_active: str = Field(
        default="",
        validation_alias=AliasChoices("KEFU_DATA_KEY_ACTIVE", "data_key_active"),
        description="The kid that encrypts new values; older kids still decrypt.",
    )
    retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Chat transcripts and message bodies older than this are purged.",
    )

    def field_cipher(self) -> FieldCipher:
        keys = {kid: secret.get_secret_value() for kid, secret in self.data_keys.items()}
        return FieldCipher(keys, self.data_key_active or next(iter(keys), ""))

    def keyring(self) -> KeyRing:
        keys = {kid: secret.get_secret_value() for kid, secret in self.auth_keys.items()}
        return KeyRing(keys, self.auth_signing_key or next(iter(keys), ""))

    def topic(self, name: str) -> str:
        """The full name of one of the topics in ``kefu_shared.topics``."""
        return f"{self.topic_prefix}{name}"


class BatchConsumerSettings(ServiceSettings):
    """For a service whose busy consumers take records in batches (``runtime.batch_subscriber``)."""

    consumer_workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Records of different customers a consumer handles at once, within each "
        "batch it fetches; one customer's records stay in order.",
    )
    consumer_batch_records: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Records a consumer fetches at most at once and commits together, each still "
        "handled (retried, dead-lettered) alone.",
    )


class EventConsumerSettings(BatchConsumerSettings):
    """For a service that follows other services' event topics in batches, where nobody waits on
    the outcome by the millisecond (facts, attribution, projections)."""

    event_fetch_gather_ms: int = Field(
        default=100,
        ge=0,
        le=5000,
        description="How long the broker may hold a fetch of other services' events to gather "
        "them (0 = answer at once): fewer fetches and offset commits when events trickle in, "
        "each event handled at most this much later.",
    )


S = TypeVar("S", bound=BaseSettings)


def settings_class_of(service: str) -> type[ServiceSettings] | None:
    """The settings class ``kefu_<service>.settings`` defines (not a base it imports, such as
    ``BatchConsumerSettings``); None while the service is not installed or has none."""
    try:
        module = importlib.import_module(f"kefu_{service}.settings")
    except ModuleNotFoundError as exc:
        if exc.name in (f"kefu_{service}", f"kefu_{service}.settings"):
            return None
        raise
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, ServiceSettings) and obj.__module__ == module.__name__:
            return obj
    return None


class SettingsError(SystemExit):
    """Raised at start-up when the environment does not describe a runnable service."""


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build settings from the environment, or exit with a message naming each bad variable."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = []
        for err in exc.errors():
            if not err["loc"]:  # a rule across fields: its message names the variables
                lines.append(f"  {err['msg']}")
                continue
            env_name = _env_name(cls, str(err["loc"][0]), prefix)
            lines.append(f"  {env_name}: {err['msg']}")
        message = f"invalid configuration for {cls.__name__}:\n" + "\n".join(lines)
        print(message, file=sys.stderr)
        raise SettingsError(message) from exc


def _env_name(cls: type[BaseSettings], field: str, prefix: str) -> str:
    info = cls.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    if isinstance(alias, str):
        return alias
    return f"{prefix}{field}".upper()
