"""Configuration of the orders service (``KEFU_ORDERS_...``, plus the shared Kafka/MongoDB ones)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kefu_shared.settings import EventConsumerSettings
from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from kefu_orders.domain.order import FollowUpPolicy, VerificationPolicy


class OrdersSettings(EventConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_ORDERS_", extra="ignore", frozen=True)

    # Unpaid follow-up, counted from the order's placed_at.
    first_reminder_seconds: float = Field(
        default=600, gt=0, description="First payment reminder; must come before the lost mark."
    )
    lost_after_seconds: float = Field(
        default=1200, gt=0, description="Not contacted within this: lost (handbook: 20 minutes)."
    )
    second_reminder_seconds: float = Field(default=7200, gt=0)
    expire_after_seconds: float = Field(default=86400, gt=0, description="Unpaid: expired.")
    evidence_grace_seconds: float = Field(
        default=60,
        ge=0,
        description="The lost check waits this long past the mark for late inquiry events.",
    )
    timer_scan_seconds: float = Field(default=1.0, gt=0, le=60)

    # Attribution evidence.
    attribution_lookback_days: float = Field(
        default=15, gt=0, description="Talk this long before placing still counts."
    )
    evidence_retention_days: float = Field(
        default=45,
        ge=15,
        description="Contacts are kept this long (the handbook asks for at least 15 days).",
    )

    retention_scan_seconds: float = Field(
        default=3600, gt=0, description="How often contact evidence past retention is purged."
    )

    # Identity verification for order changes.
    verification_code_valid_seconds: float = Field(default=600, gt=0, le=3600)
    verification_max_code_attempts: int = Field(default=3, ge=1, le=10)
    verification_max_details_failures: int = Field(default=5, ge=1, le=20)

    # Tables (JSON files); empty means the packaged default.
    couriers_file: str = ""
    duty_roster_file: str = ""
    note_units_file: str = ""
    note_language: Literal["zh-CN", "en"] = Field(
        default="zh-CN", description="Language of the order note for the shop's back office."
    )
    shop_timezone: str = Field(default="Asia/Shanghai", description="For 'pay before' times.")

    @field_validator("shop_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _clock_in_order(self) -> Self:
        if not self.first_reminder_seconds < self.lost_after_seconds:
            raise ValueError("first_reminder_seconds must be below lost_after_seconds")
        if not self.first_reminder_seconds < self.second_reminder_seconds:
            raise ValueError("second_reminder_seconds must be above first_reminder_seconds")
        if not self.second_reminder_seconds < self.expire_after_seconds:
            raise ValueError("expire_after_seconds must be above second_reminder_seconds")
        if self.evidence_retention_days < self.attribution_lookback_days:
            raise ValueError("evidence_retention_days must be at least attribution_lookback_days")
        return self

    def follow_up(self) -> FollowUpPolicy:
        return FollowUpPolicy(
            first_reminder=timedelta(seconds=self.first_reminder_seconds),
            lost_after=timedelta(seconds=self.lost_after_seconds),
            second_reminder=timedelta(seconds=self.second_reminder_seconds),
            expire_after=timedelta(seconds=self.expire_after_seconds),
            evidence_grace=timedelta(seconds=self.evidence_grace_seconds),
        )

    def verification(self) -> VerificationPolicy:
        return VerificationPolicy(
            code_valid=timedelta(seconds=self.verification_code_valid_seconds),
            max_code_attempts=self.verification_max_code_attempts,
            max_details_failures=self.verification_max_details_failures,
        )
