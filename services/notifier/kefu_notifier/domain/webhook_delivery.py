"""One kefu event on its way to one webhook subscription: the aggregate whose id is its
delivery id, derived from (subscription id, event id).

Lifecycle::

    pending ──claim──> sending ──2xx──> delivered
       ^                  │ ──any other answer, timeout, refused target, attempts left──┐
       └──────────────────┘ (next_attempt_at = now + backoff)                            │
                          └──attempts exhausted──> failed                               ─┘

``delivered`` and ``failed`` are final. Because the id is derived from the event id, a
redelivered event finds the delivery already recorded and changes nothing: after a success it
is never POSTed again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from kefu_notifier.domain.policies import Backoff


class WebhookDeliveryStatus(StrEnum):
    PENDING = "pending"
    """Waiting for its first attempt, or for a retry after a failed one."""
    SENDING = "sending"
    """Claimed by a worker that is POSTing it; the claim expires at ``next_attempt_at``."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Every attempt up to the cap failed; kept in the log, never tried again."""


DUE_STATUSES = frozenset({WebhookDeliveryStatus.PENDING, WebhookDeliveryStatus.SENDING})
FINAL_STATUSES = frozenset({WebhookDeliveryStatus.DELIVERED, WebhookDeliveryStatus.FAILED})


class WebhookDeliveryNotDue(Exception):
    """The delivery moved on (another worker, a final state) since it was read."""


def webhook_delivery_id(subscription_id: str, event_id: str) -> str:
    """Stable across retries, redeliveries and restarts: receivers deduplicate on it."""
    digest = hashlib.sha256(f"{subscription_id}\n{event_id}".encode()).hexdigest()
    return "whd_" + digest[:32]


@dataclass(frozen=True)
class WebhookDelivery:
    delivery_id: str
    subscription_id: str
    event_id: str
    event_type: str
    event_source: str
    event_subject: str
    correlation_id: str
    body: str
    """The envelope JSON, serialised once: every attempt sends (and signs) the same bytes."""
    status: WebhookDeliveryStatus
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    attempts: int = 0
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None

    @classmethod
    def record(
        cls,
        *,
        subscription_id: str,
        event_id: str,
        event_type: str,
        event_source: str,
        event_subject: str,
        correlation_id: str,
        body: str,
        now: datetime,
    ) -> WebhookDelivery:
        return cls(
            delivery_id=webhook_delivery_id(subscription_id, event_id),
            subscription_id=subscription_id,
            event_id=event_id,
            event_type=event_type,
            event_source=event_source,
            event_subject=event_subject,
            correlation_id=correlation_id,
            body=body,
            status=WebhookDeliveryStatus.PENDING,
            created_at=now,
            updated_at=now,
            next_attempt_at=now,
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

    def claim(self, now: datetime, lease: timedelta) -> WebhookDelivery:
        """Reserve it for one worker until the lease expires (then a crashed one's is retried)."""
        if not self.is_due(now):
            raise WebhookDeliveryNotDue(self.delivery_id)
        return replace(
            self,
            status=WebhookDeliveryStatus.SENDING,
            next_attempt_at=now + lease,
            last_attempt_at=now,
            updated_at=now,
        )

    def succeeded(self, status_code: int, now: datetime) -> WebhookDelivery:
        self._require_sending()
        return replace(
            self,
            status=WebhookDeliveryStatus.DELIVERED,
            attempts=self.attempts + 1,
            last_status_code=status_code,
            next_attempt_at=None,
            delivered_at=now,
            updated_at=now,
        )

    def attempt_failed(
        self, error: str, status_code: int | None, *, backoff: Backoff, now: datetime
    ) -> WebhookDelivery:
        """Retry later with exponential backoff, or fail for good once attempts run out."""
        self._require_sending()
        attempts = self.attempts + 1
        tried = replace(
            self,
            attempts=attempts,
            last_status_code=status_code,
            last_error=error,
            updated_at=now,
        )
        if backoff.exhausted(attempts):
            return replace(tried, status=WebhookDeliveryStatus.FAILED, next_attempt_at=None)
        return replace(
            tried,
            status=WebhookDeliveryStatus.PENDING,
            next_attempt_at=now + backoff.delay(attempts),
        )

    def _require_sending(self) -> None:
        if self.status is not WebhookDeliveryStatus.SENDING:
            raise WebhookDeliveryNotDue(f"{self.delivery_id} is {self.status}, not sending")
