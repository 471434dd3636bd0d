"""The notifier's configuration: ``KEFU_NOTIFIER_*`` (plus the shared Kafka/MongoDB variables)."""

from __future__ import annotations

from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kefu_shared.contracts.notifier import NotificationChannel
from kefu_shared.settings import BatchConsumerSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict


class NotifierSettings(BatchConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_NOTIFIER_", extra="ignore", frozen=True)

    http_port: int = Field(default=8084, ge=1, le=65535)

    # Anti-spam policies.
    shop_timezone: str = Field(default="Asia/Shanghai", description="IANA zone of quiet hours.")
    quiet_hours_start: time = time(22, 0)
    quiet_hours_end: time = time(8, 0)
    quiet_hours_channels: list[NotificationChannel] = Field(
        default_factory=lambda: [NotificationChannel.SMS],
        description="Intrusive channels that wait for the end of the quiet hours.",
    )
    rate_limit_per_customer: int = Field(default=5, ge=1, le=1000)
    rate_limit_window_seconds: float = Field(default=3600.0, gt=0)

    # Delivery retries (provider errors), durable in the delivery document.
    delivery_max_attempts: int = Field(default=5, ge=1, le=50)
    delivery_initial_backoff_seconds: float = Field(default=30.0, gt=0)
    delivery_max_backoff_seconds: float = Field(default=1800.0, gt=0)
    send_lease_seconds: float = Field(
        default=120.0, gt=0, description="How long a claimed delivery is reserved for a sender."
    )
    dispatch_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    dispatch_batch_size: int = Field(default=50, ge=1, le=1000)
    attempts_at_once: int = Field(
        default=50,
        ge=0,
        le=1000,
        description="Deliveries judged by the policies as they are accepted and sent at once, "
        "at most this many at a time (recorded already claimed; their due times are written "
        "only if they stay due); beyond that, and with 0, they are recorded pending and wait "
        "for the dispatcher's scan of the due times.",
    )
    due_reconcile_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="How often the deliveries' due times are rebuilt from the deliveries (after "
        "a crash between a delivery's write and its due time's).",
    )
    provider_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    # Providers. A channel without configuration uses the log provider when
    # ``log_unconfigured_channels`` is on (local demo), and is unavailable otherwise.
    log_unconfigured_channels: bool = True
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_sender: str = "kefu <noreply@kefu.local>"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    sms_url: str = ""
    sms_token: str = ""
    wechat_url: str = ""
    wechat_token: str = ""
    marketplace_im_url: str = ""
    marketplace_im_token: str = ""
    app_push_url: str = ""
    app_push_token: str = ""
    webhook_url: str = ""
    webhook_secret: str = Field(
        default="", description="HMAC-SHA256 key for X-Kefu-Signature; also signs provider calls."
    )

    # Webhook subscriptions: kefu events POSTed to other systems (README, "Webhook subscriptions").
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="Accept targets on private, loopback and link-local addresses (tests, "
        "closed networks). Off: such targets are refused with a 422 (SSRF).",
    )
    webhook_delivery_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_initial_backoff_seconds: float = Field(default=10.0, gt=0)
    webhook_max_backoff_seconds: float = Field(default=3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_send_lease_seconds: float = Field(
        default=60.0, gt=0, description="How long a claimed webhook delivery is reserved."
    )
    webhook_disable_after_failures: int = Field(
        default=20, ge=1, description="Consecutive failed attempts before a subscription is off."
    )
    webhook_disable_after_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="...and the failures must have lasted at least this long.",
    )
    webhook_dispatch_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhook_dispatch_batch_size: int = Field(default=50, ge=1, le=1000)
    webhook_consumer_group: str = Field(
        default="",
        description="Consumer group of the webhook fan-out; defaults to "
        "<consumer_group or kefu-notifier>-webhooks.",
    )
    webhook_subscription_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long the fan-out reuses the list of subscriptions (other replicas see "
        "a change that much later; 0 = read it for every event).",
    )
    webhook_fetch_gather_ms: int = Field(
        default=100,
        ge=0,
        le=5000,
        description="How long the broker may hold the webhook fan-out's fetch to gather events "
        "(0 = answer at once): fewer fetches and offset commits when events trickle in, each "
        "event at most this much later to the webhooks.",
    )
    webhook_history_grace_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Events up to this long before a subscription's creation still match it "
        "(clock skew between services); older ones never do.",
    )

    # Retention (retention_days, shared setting): rendered texts of finished deliveries.
    retention_scan_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often rendered texts of deliveries finished more than retention_days "
        "ago are purged.",
    )

    @field_validator("shop_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _wall_clock(cls, value: time) -> time:
        # Quiet hours are wall-clock times in shop_timezone; one with an offset of its own
        # could not be compared with the local time, and every SMS would fail at night.
        if value.tzinfo is not None:
            raise ValueError("must be a time of day without an offset (see shop_timezone)")
        return value

    def webhook_group(self) -> str:
        return self.webhook_consumer_group or f"{self.consumer_group or 'kefu-notifier'}-webhooks"
