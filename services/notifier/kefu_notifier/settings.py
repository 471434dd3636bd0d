"""The notifier's configuration: ``KEFU_NOTIFIER_*`` (plus the shared Kafka/MongoDB variables)."""

from __future__ import annotations

from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kefu_shared.contracts.notifier import NotificationChannel
from kefu_shared.settings import ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict


class NotifierSettings(ServiceSettings):
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

    @field_validator("shop_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
