"""Business hours: how much of a waiting time fell inside the shop's opening hours.

A customer who writes at 23:50 and gets an answer at 09:05 waited 9 hours on the clock but only
5 minutes of service time if the team starts at 09:00. Supervisors judge agents on the second
figure and customers feel the first, so the KPIs report both (Chatwoot's
``value_in_business_hours``). The calendar is data (``data/business_hours.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class BusinessCalendar:
    """Opening hours per weekday (local time) and closed days, in the shop's time zone."""

    timezone: ZoneInfo
    hours: Mapping[int, tuple[time, time]]
    """weekday (0 = Monday) -> (open, close); a weekday missing is closed all day."""
    holidays: frozenset[date] = frozenset()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> BusinessCalendar:
        hours: dict[int, tuple[time, time]] = {}
        for name, span in dict(data.get("hours", {})).items():
            if name not in WEEKDAYS:
                raise ValueError(f"hours: unknown weekday {name!r}")
            if span is None:
                continue
            opens, closes = time.fromisoformat(span[0]), time.fromisoformat(span[1])
            if closes <= opens and closes != time(0, 0):
                raise ValueError(f"hours.{name}: closes before it opens")
            hours[WEEKDAYS.index(name)] = (opens, closes)
        return cls(
            timezone=ZoneInfo(str(data.get("timezone", "Asia/Shanghai"))),
            hours=hours,
            holidays=frozenset(date.fromisoformat(d) for d in data.get("holidays", ())),
        )

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.timezone)

    def _open_span(self, day: date) -> tuple[datetime, datetime] | None:
        if day in self.holidays or day.weekday() not in self.hours:
            return None
        opens, closes = self.hours[day.weekday()]
        start = datetime.combine(day, opens, tzinfo=self.timezone)
        # A closing time of 00:00 means midnight at the end of that day.
        end_day = day + timedelta(days=1) if closes == time(0, 0) else day
        end = datetime.combine(end_day, closes, tzinfo=self.timezone)
        return start, end

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Seconds of [start, end) that fall inside opening hours (0 if end <= start)."""
        if end <= start:
            return 0.0
        total = 0.0
        day = self.local(start).date() - timedelta(days=1)  # a span may start the day before
        last = self.local(end).date()
        while day <= last:
            span = self._open_span(day)
            if span is not None:
                lo = max(start, span[0])
                hi = min(end, span[1])
                if hi > lo:
                    total += (hi.astimezone(UTC) - lo.astimezone(UTC)).total_seconds()
            day += timedelta(days=1)
        return total
