"""Configuration of the after-sales service (``KEFU_AFTERSALES_...``)."""

from __future__ import annotations

from collections.abc import Callable

from kefu_shared.settings import EventConsumerSettings
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from kefu_aftersales.domain.flows import load_flows
from kefu_aftersales.domain.inference import load_inferrer
from kefu_aftersales.domain.policy import load_policy


class AftersalesSettings(EventConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_AFTERSALES_", extra="ignore", frozen=True)
    retention_scan_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often free text past the retention period (retention_days) is purged.",
    )
    review_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Marketplace review texts, replies and explanations of cases closed longer "
        "than this are purged.",
    )

    http_port: int = Field(default=8085, ge=1, le=65535)
    policy_file: str = Field(
        default="", description="The shop's after-sales policy (JSON); packaged default."
    )
    flows_file: str = Field(default="", description="The state machine per kind (JSON).")
    inference_file: str = Field(
        default="", description="Keywords that guess kind and reason from an inquiry (JSON)."
    )
    timer_scan_seconds: float = Field(
        default=1.0, gt=0, le=300, description="How often reply deadlines and auto-closes run."
    )
    stale_claim_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A line claim whose case was never written is free again after this long.",
    )

    # A broken file stops the service at start, naming the variable, not at the first request.
    @field_validator("policy_file")
    @classmethod
    def _policy_loads(cls, value: str) -> str:
        return _loads(load_policy, value)

    @field_validator("flows_file")
    @classmethod
    def _flows_load(cls, value: str) -> str:
        return _loads(load_flows, value)

    @field_validator("inference_file")
    @classmethod
    def _inference_loads(cls, value: str) -> str:
        return _loads(load_inferrer, value)

    def group(self, source: str) -> str:
        """One consumer group per input topic, so one slow input never stalls the others."""
        return f"{self.consumer_group or 'kefu-aftersales'}-{source}"


def _loads(load: Callable[[str | None], object], value: str) -> str:
    try:
        load(value or None)
    except (OSError, KeyError, TypeError) as exc:  # ValueErrors pass through as they are
        raise ValueError(f"cannot load {value or 'the packaged file'}: {exc!r}") from exc
    return value
