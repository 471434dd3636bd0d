"""The duty roster: who is on duty when, so a lost order counts against the right agent.

The handbook counts lost orders (placed, unpaid, nobody contacted within 20 minutes) only for
the agent on duty (值班流失单数, 只考核当值人员). The roster is data: a packaged default
(``data/duty_roster.json``) replaced at run time by ``PUT /duty-roster``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Shift(BaseModel):
    """One agent's recurring shift, in the roster's time zone. ``end`` may be before ``start``
    (a night shift running past midnight); ``end`` 00:00 means midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str = Field(min_length=1, max_length=200)
    days: list[str] = Field(
        default_factory=lambda: list(WEEKDAYS), description="Days the shift starts on (mon..sun)."
    )
    start: time
    end: time

    @field_validator("days")
    @classmethod
    def _known_days(cls, value: list[str]) -> list[str]:
        days = [d.strip().lower()[:3] for d in value]
        unknown = [d for d in days if d not in WEEKDAYS]
        if unknown or not days:
            raise ValueError(f"days must be among {', '.join(WEEKDAYS)}; got {value}")
        return days

    @field_validator("start", "end")
    @classmethod
    def _wall_clock(cls, value: time) -> time:
        # A shift is wall-clock time in the roster's zone; an offset of its own would say two
        # different things (and cannot be compared with the local time of day).
        if value.tzinfo is not None:
            raise ValueError("must be a time of day without an offset (the roster's timezone)")
        return value

    def covers(self, local: datetime) -> bool:
        moment = local.time().replace(tzinfo=None)
        today = WEEKDAYS[local.weekday()]
        yesterday = WEEKDAYS[(local - timedelta(days=1)).weekday()]
        if self.start < self.end:
            return today in self.days and self.start <= moment < self.end
        # Runs past midnight (or ends at 00:00): the evening part belongs to the start day,
        # the morning part to the day before.
        if today in self.days and moment >= self.start:
            return True
        return yesterday in self.days and moment < self.end


class DutyRoster(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str = "Asia/Shanghai"
    # Bounded: the roster is one document, read whole on every order placed.
    shifts: list[Shift] = Field(default_factory=list, max_length=500)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> DutyRoster:
        return cls.model_validate({k: v for k, v in data.items() if not k.startswith("_")})

    def on_duty(self, at: datetime) -> str | None:
        """The agent on duty at ``at``: the first listed shift covering it (list the primary
        duty agent first when shifts overlap); None when nobody is."""
        local = at.astimezone(ZoneInfo(self.timezone))
        for shift in self.shifts:
            if shift.covers(local):
                return shift.agent_id
        return None
