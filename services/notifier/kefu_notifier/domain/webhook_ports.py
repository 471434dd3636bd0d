"""What the webhook use cases need from outside: an HTTP client and a target guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kefu_notifier.domain.webhook_targets import Target


@dataclass(frozen=True)
class WebhookRequest:
    """One attempt of one delivery: the body is the event envelope's JSON."""

    url: str
    body: bytes
    secret: str
    delivery_id: str
    subscription_id: str
    event_id: str
    event_type: str
    attempt: int


class WebhookAttemptFailed(Exception):
    """The receiver did not accept the delivery (non-2xx, timeout, connection error)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class WebhookPoster(Protocol):
    async def post(self, request: WebhookRequest) -> int:
        """POST it signed; return the 2xx status code or raise WebhookAttemptFailed."""
        ...


class TargetGuard(Protocol):
    async def check(self, url: str) -> Target:
        """Parse and, unless private targets are allowed, resolve the host and refuse it if
        any address is not public. Raises ``TargetRefused``."""
        ...

    @property
    def enforcing(self) -> bool:
        """False when private targets are allowed by configuration (tests, closed networks)."""
        ...
