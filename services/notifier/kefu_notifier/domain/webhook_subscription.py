"""A webhook subscription: who wants which kefu events POSTed where, and whether it still works.

Lifecycle::

    active ──pause──> paused ──resume──> active
      │ (deliveries keep failing: DisablePolicy)
      └──> disabled ──resume──> active            any ──delete──> deleted (final)

Which events a subscription gets (the rule the README documents):
- ``active``: events that match are recorded as deliveries and POSTed.
- ``paused``: matching events are still recorded, but nothing is POSTed; ``resume`` sends what
  matched meanwhile (the owner asked for a pause, so they expect to catch up).
- ``disabled``: matching events are no longer recorded (the endpoint is broken and nobody is
  reading: no unbounded pile-up); deliveries recorded before stay and go out after ``resume``.
- Only events that happened at or after the subscription's creation (minus a small clock-skew
  grace) match: a new subscription never receives the retained history of a topic.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from kefu_notifier.domain.event_patterns import is_valid_pattern, matches_any


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DISABLED = "disabled"
    DELETED = "deleted"


RECORDING_STATUSES = frozenset({SubscriptionStatus.ACTIVE, SubscriptionStatus.PAUSED})
"""Statuses in which matching events become deliveries."""

SECRET_PREFIX = "whsec_"
HINT_LENGTH = 4


class SubscriptionConflict(Exception):
    """The requested change does not apply to the subscription's current status."""


def new_secret() -> str:
    """A signing secret for a subscription created without one (shown once, at creation)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hint(secret: str) -> str:
    """What the API shows instead of the secret: enough to tell two secrets apart."""
    return "…" + secret[-HINT_LENGTH:] if secret else ""


@dataclass(frozen=True)
class DisablePolicy:
    """When a failing subscription is switched off.

    Both must hold: ``after_failures`` attempts in a row failed, and the first of them is at
    least ``after`` old. The count alone would switch a healthy endpoint off during a short
    outage that happens to meet a burst of events; the time alone would on one unlucky retry.
    """

    after_failures: int = 20
    after: timedelta = timedelta(hours=1)

    def should_disable(
        self, consecutive_failures: int, failing_since: datetime, now: datetime
    ) -> bool:
        return consecutive_failures >= self.after_failures and now - failing_since >= self.after


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    target_url: str
    event_types: tuple[str, ...]
    secret: str
    description: str
    created_by: str
    status: SubscriptionStatus
    created_at: datetime
    updated_at: datetime
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    last_success_at: datetime | None = None
    disabled_reason: str | None = None
    disabled_at: datetime | None = None

    @classmethod
    def create(
        cls,
        *,
        subscription_id: str,
        target_url: str,
        event_types: tuple[str, ...],
        secret: str,
        description: str,
        created_by: str,
        now: datetime,
    ) -> Subscription:
        bad = [p for p in event_types if not is_valid_pattern(p)]
        if not event_types or bad:
            raise ValueError(f"event_types: invalid or missing patterns {bad}")
        return cls(
            subscription_id=subscription_id,
            target_url=target_url,
            event_types=tuple(dict.fromkeys(event_types)),  # keep order, drop repeats
            secret=secret,
            description=description,
            created_by=created_by,
            status=SubscriptionStatus.ACTIVE,
            created_at=now,
            updated_at=now,
        )

    @property
    def secret_hint(self) -> str:
        return secret_hint(self.secret)

    def wants(self, event_type: str, event_time: datetime, grace: timedelta) -> bool:
        """Should this event become a delivery of this subscription? (rule in the docstring)"""
        return (
            self.status in RECORDING_STATUSES
            and event_time >= self.created_at - grace
            and matches_any(self.event_types, event_type)
        )

    def pause(self, now: datetime) -> Subscription:
        if self.status is SubscriptionStatus.PAUSED:
            return self
        if self.status is not SubscriptionStatus.ACTIVE:
            raise SubscriptionConflict(
                f"status: a {self.status} subscription cannot be paused"
                + ("; resume it first" if self.status is SubscriptionStatus.DISABLED else "")
            )
        return replace(self, status=SubscriptionStatus.PAUSED, updated_at=now)

    def resume(self, now: datetime) -> Subscription:
        """Switch it on again; a disabled one gets a fresh failure count (the owner fixed it)."""
        if self.status is SubscriptionStatus.ACTIVE:
            return self
        if self.status is SubscriptionStatus.DELETED:
            raise SubscriptionConflict("status: a deleted subscription cannot be resumed")
        return replace(
            self,
            status=SubscriptionStatus.ACTIVE,
            consecutive_failures=0,
            failing_since=None,
            disabled_reason=None,
            disabled_at=None,
            updated_at=now,
        )

    def delete(self, now: datetime) -> Subscription:
        # The secret is wiped: nothing is signed for a deleted subscription again.
        return replace(self, status=SubscriptionStatus.DELETED, secret="", updated_at=now)

    def delivery_succeeded(self, now: datetime) -> Subscription:
        return replace(
            self, consecutive_failures=0, failing_since=None, last_success_at=now, updated_at=now
        )

    def delivery_failed(self, error: str, now: datetime, policy: DisablePolicy) -> Subscription:
        """Count a failed attempt; switch an active subscription off when the policy says so."""
        failures = self.consecutive_failures + 1
        since = self.failing_since or now
        after = replace(
            self,
            consecutive_failures=failures,
            failing_since=since,
            last_failure_at=now,
            last_error=error,
            updated_at=now,
        )
        if self.status is SubscriptionStatus.ACTIVE and policy.should_disable(failures, since, now):
            return replace(
                after,
                status=SubscriptionStatus.DISABLED,
                disabled_reason="consecutive_failures",
                disabled_at=now,
            )
        return after
