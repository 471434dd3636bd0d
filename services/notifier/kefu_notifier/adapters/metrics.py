"""Prometheus metrics of the notifier; labels are enums only (no customer ids, no keys)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "kefu_notifications_total",
            "Notification outcomes: sent, failed, deferred, suppressed.",
            ["channel", "purpose", "status"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "kefu_notification_delivery_seconds",
            "Duration of one provider call (SMTP or HTTP), successful or not.",
            ["channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.provider_attempts = Counter(
            "kefu_notification_provider_attempts_total",
            "Provider calls by outcome: ok, retryable_error, permanent_error.",
            ["channel", "outcome"],
            registry=registry,
        )

    def outcome(self, channel: str | None, purpose: str, status: str) -> None:
        self.notifications.labels(channel or "none", purpose, status).inc()
