"""Service-level clocks: first response, next response and resolution, per channel and category.

A clock is data inside the inquiry (so it survives restarts); ``tick`` is pure: given the time,
it says which warnings and breaches are due and marks them, so each fires exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from kefu_shared.contracts.inquiry import Category, SlaKind
from pydantic import BaseModel, ConfigDict, Field


class ClockState(StrEnum):
    ACTIVE = "active"
    HIT = "hit"
    MISSED = "missed"


class SlaTargets(BaseModel):
    """Targets in seconds; None means no target of that kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_response: float | None = Field(default=None, gt=0)
    next_response: float | None = Field(default=None, gt=0)
    resolution: float | None = Field(default=None, gt=0)

    def of(self, kind: SlaKind) -> float | None:
        value: float | None = getattr(self, kind.value)
        return value

    def merged(self, override: SlaTargets) -> SlaTargets:
        return SlaTargets(
            **{**self.model_dump(exclude_none=True), **override.model_dump(exclude_none=True)}
        )


class SlaPolicy(BaseModel):
    """Targets: ``default``, overridden per channel, overridden per channel and category.

    The quality manual's 24 h response / 48 h resolution is the default; chat is far stricter.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    warn_ratio: float = Field(default=0.8, gt=0, lt=1)
    default: SlaTargets = SlaTargets(first_response=86400, next_response=86400, resolution=172800)
    channels: dict[str, SlaTargets] = Field(default_factory=dict)
    categories: dict[str, dict[str, SlaTargets]] = Field(
        default_factory=dict, description="channel -> category -> targets"
    )

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SlaPolicy:
        return cls.model_validate(data)

    def targets(self, channel: str, category: Category | None) -> SlaTargets:
        targets = self.default
        if channel in self.channels:
            targets = targets.merged(self.channels[channel])
        by_category = self.categories.get(channel, {})
        if category is not None and category.value in by_category:
            targets = targets.merged(by_category[category.value])
        return targets


class SlaClock(BaseModel):
    kind: SlaKind
    state: ClockState = ClockState.ACTIVE
    started_at: datetime
    due_at: datetime
    warn_at: datetime
    warned: bool = False
    breached: bool = False
    stopped_at: datetime | None = None

    @classmethod
    def start(cls, kind: SlaKind, now: datetime, target: float, warn_ratio: float) -> SlaClock:
        return cls(
            kind=kind,
            started_at=now,
            due_at=now + timedelta(seconds=target),
            warn_at=now + timedelta(seconds=target * warn_ratio),
        )

    def stop(self, now: datetime) -> SlaClock:
        if self.state is not ClockState.ACTIVE:
            return self
        state = ClockState.HIT if now <= self.due_at else ClockState.MISSED
        return self.model_copy(update={"state": state, "stopped_at": now})

    def next_deadline(self) -> datetime | None:
        if self.state is not ClockState.ACTIVE:
            return None
        if not self.warned:
            return self.warn_at
        if not self.breached:
            return self.due_at
        return None


class SlaAlarm(BaseModel):
    kind: SlaKind
    breach: bool  # False: the warning before it
    due_at: datetime


def tick(clocks: list[SlaClock], now: datetime) -> tuple[list[SlaClock], list[SlaAlarm]]:
    """Fire what is due. A clock found past its due time gets its breach (and no late warning)."""
    updated: list[SlaClock] = []
    alarms: list[SlaAlarm] = []
    for clock in clocks:
        if clock.state is ClockState.ACTIVE and not clock.breached and now >= clock.due_at:
            alarms.append(SlaAlarm(kind=clock.kind, breach=True, due_at=clock.due_at))
            clock = clock.model_copy(
                update={"breached": True, "warned": True, "state": ClockState.MISSED}
            )
        elif clock.state is ClockState.ACTIVE and not clock.warned and now >= clock.warn_at:
            alarms.append(SlaAlarm(kind=clock.kind, breach=False, due_at=clock.due_at))
            clock = clock.model_copy(update={"warned": True})
        updated.append(clock)
    return updated, alarms


def next_deadline(clocks: list[SlaClock]) -> datetime | None:
    """The earliest moment something must fire; indexed so the timer loop finds it cheaply.

    A missed clock stays ``missed`` but the breach has fired, so it no longer counts."""
    pending = [d for c in clocks if (d := c.next_deadline()) is not None]
    return min(pending) if pending else None
