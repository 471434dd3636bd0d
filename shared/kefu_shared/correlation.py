"""The correlation id of the message or request being handled, for logs and outgoing events."""

from __future__ import annotations

from contextvars import ContextVar

current_correlation_id: ContextVar[str | None] = ContextVar("kefu_correlation_id", default=None)
