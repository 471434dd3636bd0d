"""What the use cases need from the outside world, as protocols the adapters implement."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from kefu_notifier.domain.catalogue import ChannelKind, Purpose
from kefu_notifier.domain.delivery import Content

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (UTC). Injected so tests can move time."""


@dataclass(frozen=True)
class OutgoingMessage:
    """Everything a channel needs to deliver one notice."""

    delivery_id: str
    idempotency_key: str
    customer_id: str
    purpose: Purpose
    channel: ChannelKind
    address: str
    language: str
    subject: str
    body: str


@dataclass(frozen=True)
class SendReceipt:
    provider_message_id: str | None = None


class ProviderError(Exception):
    """A channel could not deliver. ``retryable`` separates a hiccup from a refusal."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ChannelSender(Protocol):
    """One way of reaching a customer: SMTP, an HTTP provider, a webhook, the demo log."""

    channel: ChannelKind

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        """Deliver or raise ProviderError. Must pass ``delivery_id`` on so receivers can
        deduplicate: the same message may be sent again after a crash mid-call."""
        ...


class TemplateError(ValueError):
    """The template does not exist, or the parameters do not fill it."""


class Renderer(Protocol):
    def render(self, template: str, language: str, parameters: Mapping[str, Any]) -> Content:
        """Render subject and body; raise TemplateError for unknown templates or missing
        parameters (never render a blank)."""
        ...
