"""One notification's delivery: the aggregate whose id is the requester's idempotency key.

Lifecycle::

    pending ──claim──> sending ──ok──> sent
       ^                  │ ──temporary error, attempts left──> pending (next_attempt_at)
       │                  │ ──permanent error / attempts exhausted──> failed
    deferred <──policy────┘ (quiet hours, rate limit)        suppressed (opted out)

A request attempted as soon as it is accepted is judged before it is first recorded, so it is
recorded ``sending`` (or deferred, or suppressed) straight away.

``sent``, ``failed`` and ``suppressed`` are final: nothing moves a delivery out of them, which
is what makes a redelivered request or a late retry unable to send twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from kefu_notifier.domain.catalogue import ChannelKind, Purpose
from kefu_notifier.domain.policies import Backoff, Route, Verdict


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    """Waiting for its first attempt or for a retry after a temporary provider error."""
    DEFERRED = "deferred"
    """Held back by quiet hours or the rate limit until ``next_attempt_at``."""
    SENDING = "sending"
    """Claimed by a worker that is calling the provider; the claim expires at
    ``next_attempt_at`` so a crashed worker's delivery is picked up again."""
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


FINAL_STATUSES = frozenset({DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SUPPRESSED})
DUE_STATUSES = frozenset({DeliveryStatus.PENDING, DeliveryStatus.DEFERRED, DeliveryStatus.SENDING})


def delivery_id_for(idempotency_key: str) -> str:
    """Stable across retries, redeliveries and restarts: receivers deduplicate on it."""
    return "dlv_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Content:
    """The rendered notice; rendered once at intake so every retry sends the same words."""

    subject: str
    body: str


@dataclass(frozen=True)
class Delivery:
    idempotency_key: str
    delivery_id: str
    customer_id: str
    purpose: Purpose
    template: str
    language: str
    requested_by: str
    correlation_id: str
    request_message_id: str
    routes: tuple[Route, ...]
    content: Content | None
    status: DeliveryStatus
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    attempts: int = 0
    channel: ChannelKind | None = None
    last_error: str | None = None
    reason: str | None = None
    """Why it is deferred, failed or suppressed (a NotificationFailureReason etc. value)."""
    sent_at: datetime | None = None
    provider_message_id: str | None = None

    @classmethod
    def requested(
        cls,
        *,
        idempotency_key: str,
        customer_id: str,
        purpose: Purpose,
        template: str,
        language: str,
        requested_by: str,
        correlation_id: str,
        request_message_id: str,
        routes: tuple[Route, ...],
        content: Content,
        now: datetime,
    ) -> Delivery:
        return cls(
            idempotency_key=idempotency_key,
            delivery_id=delivery_id_for(idempotency_key),
            customer_id=customer_id,
            purpose=purpose,
            template=template,
            language=language,
            requested_by=requested_by,
            correlation_id=correlation_id,
            request_message_id=request_message_id,
            routes=routes,
            content=content,
            status=DeliveryStatus.PENDING,
            created_at=now,
            updated_at=now,
            next_attempt_at=now,
        )

    @classmethod
    def rejected(
        cls,
        *,
        idempotency_key: str,
        customer_id: str,
        purpose: Purpose,
        template: str,
        language: str,
        requested_by: str,
        correlation_id: str,
        request_message_id: str,
        reason: str,
        detail: str,
        now: datetime,
    ) -> Delivery:
        """A request that can never be sent, recorded so the requester can see why."""
        return cls(
            idempotency_key=idempotency_key,
            delivery_id=delivery_id_for(idempotency_key),
            customer_id=customer_id,
            purpose=purpose,
            template=template,
            language=language,
            requested_by=requested_by,
            correlation_id=correlation_id,
            request_message_id=request_message_id,
            routes=(),
            content=None,
            status=DeliveryStatus.FAILED,
            created_at=now,
            updated_at=now,
            next_attempt_at=None,
            reason=reason,
            last_error=detail,
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def is_due(self, now: datetime) -> bool:
        return (
            self.status in DUE_STATUSES
            and self.next_attempt_at is not None
            and self.next_attempt_at <= now
        )

    def claim(self, now: datetime, lease: timedelta) -> Delivery:
        """Mark it as being sent, so no other worker sends it until the lease expires."""
        self._require_due(now)
        return replace(
            self, status=DeliveryStatus.SENDING, next_attempt_at=now + lease, updated_at=now
        )

    def judged(self, verdict: Verdict, now: datetime, lease: timedelta) -> Delivery:
        """Where the policies' verdict leaves a due delivery: suppressed, deferred, or claimed
        for sending on the verdict's route."""
        self._require_due(now)
        if verdict.suppress_reason is not None:
            return self.suppress(verdict.suppress_reason, now)
        if verdict.route is None:
            raise ValueError("a verdict that does not suppress names a route")
        if verdict.defer_until is not None:
            reason = verdict.defer_reason or "quiet_hours"
            return self.defer(verdict.defer_until, reason, verdict.route.channel, now)
        return self.claim(now, lease)

    def defer(self, until: datetime, reason: str, channel: ChannelKind, now: datetime) -> Delivery:
        return replace(
            self,
            status=DeliveryStatus.DEFERRED,
            next_attempt_at=until,
            reason=reason,
            channel=channel,
            updated_at=now,
        )

    def suppress(self, reason: str, now: datetime) -> Delivery:
        return replace(
            self,
            status=DeliveryStatus.SUPPRESSED,
            next_attempt_at=None,
            reason=reason,
            updated_at=now,
        )

    def fail(self, reason: str, detail: str, now: datetime) -> Delivery:
        return replace(
            self,
            status=DeliveryStatus.FAILED,
            next_attempt_at=None,
            reason=reason,
            last_error=detail,
            updated_at=now,
        )

    def succeeded(
        self, channel: ChannelKind, provider_message_id: str | None, now: datetime
    ) -> Delivery:
        self._require(DeliveryStatus.SENDING)
        return replace(
            self,
            status=DeliveryStatus.SENT,
            attempts=self.attempts + 1,
            channel=channel,
            next_attempt_at=None,
            reason=None,
            sent_at=now,
            provider_message_id=provider_message_id,
            updated_at=now,
        )

    def attempt_failed(
        self,
        channel: ChannelKind,
        error: str,
        *,
        retryable: bool,
        backoff: Backoff,
        now: datetime,
    ) -> Delivery:
        """Schedule a retry, or fail for good when the error is permanent or retries ran out."""
        self._require(DeliveryStatus.SENDING)
        attempts = self.attempts + 1
        tried = replace(self, attempts=attempts, channel=channel, last_error=error)
        if not retryable:
            return tried.fail("provider_rejected", error, now)
        if backoff.exhausted(attempts):
            return tried.fail("retries_exhausted", error, now)
        return replace(
            tried,
            status=DeliveryStatus.PENDING,
            next_attempt_at=now + backoff.delay(attempts),
            reason=None,
            updated_at=now,
        )

    def _require_due(self, now: datetime) -> None:
        if not self.is_due(now):
            raise DeliveryNotDue(f"{self.idempotency_key} is {self.status}, not due")

    def _require(self, status: DeliveryStatus) -> None:
        if self.status is not status:
            raise DeliveryNotDue(f"{self.idempotency_key} is {self.status}, not {status}")


class DeliveryNotDue(RuntimeError):
    """Another worker (or an earlier attempt) already moved the delivery on."""
