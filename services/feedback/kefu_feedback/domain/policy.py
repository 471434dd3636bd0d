"""The feedback rules as data: survey etiquette and the handbook's KPI formulas.

Loaded from ``data/feedback_policy.json`` (or a file named in the settings); keys starting with
``_`` are comments. A malformed file stops the service at start, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from kefu_shared.contracts.feedback import Dimension
from kefu_shared.contracts.notifier import NotificationChannel
from pydantic import BaseModel, ConfigDict, Field

from kefu_feedback.domain.calendar import BusinessCalendar


class SurveyPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cooldown_days: float = Field(default=30, ge=0)
    max_age_hours: float = Field(default=72, gt=0)
    survey_bot_resolved: bool = True
    low_rating: int = Field(default=2, ge=1, le=4)
    after_sales_dimensions: frozenset[Dimension] = frozenset(
        {Dimension.AFTER_SALES_SERVICE, Dimension.PRODUCT_QUALITY}
    )
    preferred_channel: dict[str, NotificationChannel] = Field(default_factory=dict)


class KpiPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reopen_window_days: float = Field(default=7, ge=0)
    satisfied_min_rating: int = Field(default=4, ge=1, le=5)
    not_served_categories: frozenset[str] = frozenset({"after_sales", "spam"})
    conversion_baseline_percent: float = Field(default=55.0, ge=0, le=100)
    points_per_percentage_point: float = 0.5
    points_per_lost_order: float = -0.5
    top_n: int = Field(default=10, ge=1, le=100)


class FeedbackPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    survey: SurveyPolicy = SurveyPolicy()
    kpis: KpiPolicy = KpiPolicy()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> FeedbackPolicy:
        return cls.model_validate(_without_comments(data))


def _without_comments(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _without_comments(v) for k, v in data.items() if not str(k).startswith("_")}
    return data


def _read(name: str, path: str | None) -> Any:
    if path:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    text = resources.files("kefu_feedback").joinpath(f"data/{name}").read_text("utf-8")
    return json.loads(text)


def load_policy(path: str | None = None) -> FeedbackPolicy:
    return FeedbackPolicy.from_data(_read("feedback_policy.json", path))


def load_calendar(path: str | None = None) -> BusinessCalendar:
    return BusinessCalendar.from_data(_without_comments(_read("business_hours.json", path)))
