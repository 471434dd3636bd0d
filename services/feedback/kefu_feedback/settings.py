"""Configuration of the feedback service (``KEFU_FEEDBACK_...``, plus the shared variables)."""

from __future__ import annotations

from kefu_shared.settings import EventConsumerSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

DEV_LINK_SECRET = "kefu-dev-survey-link-secret"


class FeedbackSettings(EventConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_FEEDBACK_", extra="ignore", frozen=True)
    retention_scan_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often free text past the retention period (retention_days) is purged.",
    )

    http_port: int = Field(default=8086, ge=1, le=65535)

    # Survey links.
    survey_base_url: str = Field(
        default="http://127.0.0.1:8086",
        description="Public base URL of the survey link: <base>/surveys/<id>?token=...",
    )
    survey_link_secret: SecretStr = Field(
        default=SecretStr(DEV_LINK_SECRET),
        description="HMAC key of the links' tokens; set a real one in production.",
    )

    # Rules as data: packaged defaults, or files of the operator's own.
    policy_file: str = Field(default="", description="Feedback policy JSON; packaged default.")
    business_hours_file: str = Field(default="", description="Business hours JSON; packaged.")

    # Survey rounds.
    quarterly_round_sample_size: int = Field(
        default=200, ge=0, description="Customers asked in the automatic quarterly round; 0: off."
    )
    quarterly_round_day: int = Field(
        default=45, ge=0, le=91, description="Days into the quarter when its round starts."
    )
    round_lookback_days: int = Field(default=90, ge=1, le=366)
    round_scan_seconds: float = Field(default=5.0, gt=0, le=3600)
    round_batch_size: int = Field(default=50, ge=1, le=1000)

    # KPI gauges on /metrics.
    gauge_window_hours: float = Field(default=24.0, gt=0, le=24 * 92)
    gauge_refresh_seconds: float = Field(default=60.0, gt=0, le=3600)
