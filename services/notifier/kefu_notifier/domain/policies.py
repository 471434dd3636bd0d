"""Never spam, never give up too early: retry backoff, quiet hours, rate limit, opt-out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from kefu_notifier.domain.catalogue import ChannelKind, Purpose


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a cap, and a cap on attempts.

    Deterministic (no jitter): the next attempt time is stored in the delivery document and
    shown in the delivery log, and deliveries to many customers are spread out anyway.
    """

    initial: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(minutes=30)
    max_attempts: int = 5

    def delay(self, attempt: int) -> timedelta:
        """Wait after the ``attempt``-th failed attempt (counting from 1)."""
        factor = 1 << max(attempt - 1, 0)  # 2**(attempt-1), kept an int
        return min(self.cap, self.initial * factor)

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


@dataclass(frozen=True)
class QuietHours:
    """A daily window, in the shop's time zone, when intrusive channels wait.

    ``start`` > ``end`` means the window spans midnight (22:00-08:00); ``start`` == ``end``
    means no quiet hours.
    """

    start: time
    end: time
    timezone: ZoneInfo
    channels: frozenset[ChannelKind] = frozenset({ChannelKind.SMS})

    def contains(self, moment: datetime) -> bool:
        if self.start == self.end:
            return False
        local = moment.astimezone(self.timezone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def deferral_until(self, moment: datetime, channel: ChannelKind) -> datetime | None:
        """When a notice on ``channel`` may go out, or None if it may go now."""
        if channel not in self.channels or not self.contains(moment):
            return None
        local = moment.astimezone(self.timezone)
        end = datetime.combine(local.date(), self.end, tzinfo=self.timezone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, self.timezone)
        return end.astimezone(moment.tzinfo)


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` notices per customer in any sliding ``window``."""

    limit: int
    window: timedelta

    def recent(self, sent_at: Iterable[datetime], now: datetime) -> list[datetime]:
        """The sends that still count at ``now``, oldest first (older ones can be forgotten)."""
        return sorted(t for t in sent_at if t > now - self.window)

    def next_slot(self, sent_at: Iterable[datetime], now: datetime) -> datetime | None:
        """None if a notice may go now, else the moment the oldest counted send expires."""
        recent = self.recent(sent_at, now)
        if len(recent) < self.limit:
            return None
        return recent[len(recent) - self.limit] + self.window


@dataclass(frozen=True)
class Preferences:
    """What one customer does not want to receive."""

    opted_out_purposes: frozenset[Purpose] = frozenset()
    opted_out_channels: frozenset[ChannelKind] = frozenset()


@dataclass(frozen=True)
class Route:
    """One way to reach the customer: a channel and the address it needs."""

    channel: ChannelKind
    address: str


def routes_for(
    addresses: dict[ChannelKind, str],
    available: Iterable[ChannelKind],
    preferred: ChannelKind | None,
    default_order: Sequence[ChannelKind],
) -> list[Route]:
    """The channels this notice could use, best first: the preferred one, then the defaults.

    A channel counts only if the customer has an address for it and a provider is configured.
    """
    usable = set(available)
    order = [preferred] if preferred is not None else []
    order += [c for c in default_order if c != preferred]
    return [Route(c, addresses[c]) for c in order if c in usable and addresses.get(c)]


@dataclass(frozen=True)
class Decision:
    """What to do with a due delivery now; exactly one of the fields applies."""

    send: Route | None = None
    defer_until: datetime | None = None
    defer_reason: str | None = None
    suppress_reason: str | None = None


def decide_attempt(
    *,
    purpose: Purpose,
    routes: Sequence[Route],
    preferences: Preferences,
    quiet_hours: QuietHours,
    transactional: bool,
    now: datetime,
) -> Decision:
    """Apply opt-out and quiet hours (the rate limit, which needs the customer's history of
    sends, is ``judge``'s).

    Opted-out channels are skipped in favour of the next route; only when every route is opted
    out is the notice suppressed. Quiet hours apply to the route that will be used: deferring
    an SMS is better than silently switching a customer who chose SMS to another channel.
    """
    if not transactional and purpose in preferences.opted_out_purposes:
        return Decision(suppress_reason="opted_out_purpose")
    allowed = [
        r for r in routes if transactional or r.channel not in preferences.opted_out_channels
    ]
    if not allowed:
        return Decision(suppress_reason="opted_out_channel")
    route = allowed[0]
    if not transactional:
        until = quiet_hours.deferral_until(now, route.channel)
        if until is not None:
            return Decision(send=route, defer_until=until, defer_reason="quiet_hours")
    return Decision(send=route)


@dataclass(frozen=True)
class Verdict:
    """What the policies make of a due notice for one customer as stored: suppress it, defer it,
    or send it now on ``route``, taking a slot in the customer's rate-limit window."""

    route: Route | None = None
    suppress_reason: str | None = None
    defer_until: datetime | None = None
    defer_reason: str | None = None
    recent_sends: tuple[datetime, ...] | None = None
    """Set when it goes now: the customer's sends in the window, this one included."""

    @property
    def sends_now(self) -> bool:
        return self.recent_sends is not None


def judge(
    *,
    purpose: Purpose,
    routes: Sequence[Route],
    preferences: Preferences,
    recent_sends: Iterable[datetime],
    quiet_hours: QuietHours,
    rate_limit: RateLimit,
    transactional: bool,
    now: datetime,
) -> Verdict:
    """Opt-out and quiet hours first (``decide_attempt``), then the rate limit, which
    transactional notices ignore but still count in: a customer who just received a
    verification code has just received a notice."""
    decision = decide_attempt(
        purpose=purpose,
        routes=routes,
        preferences=preferences,
        quiet_hours=quiet_hours,
        transactional=transactional,
        now=now,
    )
    if decision.suppress_reason is not None:
        return Verdict(suppress_reason=decision.suppress_reason)
    if decision.defer_until is not None:
        return Verdict(
            route=decision.send,
            defer_until=decision.defer_until,
            defer_reason=decision.defer_reason or "quiet_hours",
        )
    if not transactional:
        slot = rate_limit.next_slot(recent_sends, now)
        if slot is not None:
            return Verdict(route=decision.send, defer_until=slot, defer_reason="rate_limit")
    return Verdict(route=decision.send, recent_sends=(*rate_limit.recent(recent_sends, now), now))
