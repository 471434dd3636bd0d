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


KNOWN_SOURCES = frozenset({"inquiry", "orders", "aftersales", "feedback", "notifier"})


class WebhookMetrics:
    """Webhook fan-out and delivery; labels are enums and service names only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.recorded = Counter(
            "kefu_webhook_deliveries_recorded_total",
            "Deliveries recorded for matching subscriptions, by the event's source service.",
            ["source"],
            registry=registry,
        )
        self.attempts = Counter(
            "kefu_webhook_attempts_total",
            "Webhook POST attempts by outcome: ok, failed, refused_target.",
            ["outcome"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "kefu_webhook_attempt_seconds",
            "Duration of one webhook POST, successful or not.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.outcomes = Counter(
            "kefu_webhook_deliveries_total",
            "Deliveries that reached a final status: delivered or failed.",
            ["status"],
            registry=registry,
        )
        self.disabled = Counter(
            "kefu_webhook_subscriptions_disabled_total",
            "Subscriptions switched off automatically because their deliveries kept failing.",
            registry=registry,
        )

    def record(self, source: str) -> None:
        self.recorded.labels(source if source in KNOWN_SOURCES else "other").inc()
