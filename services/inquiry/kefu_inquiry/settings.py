"""Configuration of the inquiry service (``KEFU_INQUIRY_...``)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from kefu_shared.settings import BatchConsumerSettings
from kefu_shared.topics import Channel
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from kefu_inquiry.domain.sla import SlaPolicy

ALL_CHANNELS = ",".join(c.value for c in Channel)


class InquirySettings(BatchConsumerSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_INQUIRY_", extra="ignore", frozen=True)

    channels: str = Field(
        default=ALL_CHANNELS,
        description="Comma-separated channels this instance consumes, e.g. 'chat' to scale chat "
        "alone. Each channel has its own consumer group kefu-inquiry-<channel>.",
    )
    rules_file: str = Field(
        default="", description="Classification rules (JSON); packaged default."
    )
    sla_file: str = Field(default="", description="SLA targets (JSON); packaged default.")
    bot_min_score: float = Field(
        default=0.6, gt=0, le=1, description="Share of an article's keywords a message must hit."
    )
    sla_scan_seconds: float = Field(default=1.0, gt=0, le=60)
    knowledge_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long this process answers from the knowledge-base articles it read "
        "last (0: read them for every message); its own edits show at once, other instances' "
        "after this long.",
    )
    sla_reconcile_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="How often the SLA due times are rebuilt from the inquiries (after a crash "
        "between an inquiry's write and its due time's).",
    )
    retention_scan_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often message texts past KEFU_INQUIRY_RETENTION_DAYS are purged.",
    )
    dispatch_scan_seconds: float = Field(
        default=5.0, gt=0, le=300, description="How often the waiting queue is offered to agents."
    )

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: str) -> str:
        names = [c.strip() for c in value.split(",") if c.strip()]
        if not names:
            raise ValueError("at least one channel")
        unknown = [n for n in names if n not in Channel.__members__.values()]
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; known: {ALL_CHANNELS}")
        return ",".join(names)

    def served_channels(self) -> tuple[Channel, ...]:
        return tuple(Channel(c) for c in self.channels.split(","))

    def consumer_group_for(self, channel: Channel) -> str:
        base = self.consumer_group or "kefu-inquiry"
        return f"{base}-{channel.value}"

    def sla_policy(self) -> SlaPolicy:
        if self.sla_file:
            text = Path(self.sla_file).read_text(encoding="utf-8")
        else:
            text = (
                resources.files("kefu_inquiry").joinpath("data/sla_targets.json").read_text("utf-8")
            )
        data = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
        return SlaPolicy.from_data(data)
