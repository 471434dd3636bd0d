"""Prometheus metrics of the inquiry service; every series carries the ``channel`` label, so a
platform team sees (and alerts on) its own channel."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class InquiryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "kefu_inquiry_messages_total",
            "Customer messages handled, by channel and outcome (opened, joined, spam, duplicate).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "kefu_inquiry_messages_rejected_total",
            "Customer messages refused as invalid (HTTP 4xx or dead-lettered), by channel.",
            ["channel", "reason"],
            registry=registry,
        )
        self.classified = Counter(
            "kefu_inquiry_classified_total",
            "New inquiries by channel, category and whether a human must triage them.",
            ["channel", "category", "needs_human"],
            registry=registry,
        )
        self.auto_answered = Counter(
            "kefu_inquiry_auto_answered_total",
            "Inquiries the bot answered from the knowledge base.",
            ["channel"],
            registry=registry,
        )
        self.assigned = Counter(
            "kefu_inquiry_assigned_total", "Assignments to agents.", ["channel"], registry=registry
        )
        self.first_response = Histogram(
            "kefu_inquiry_first_response_seconds",
            "From the customer's first message to the first human reply.",
            ["channel"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600, 48 * 3600),
            registry=registry,
        )
        self.sla_alarms = Counter(
            "kefu_inquiry_sla_alarms_total",
            "SLA warnings and breaches, by channel, SLA kind and alarm.",
            ["channel", "sla", "alarm"],
            registry=registry,
        )
