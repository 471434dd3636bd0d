"""Prometheus metrics of the after-sales service; labels are enums and rule ids only (no
customer, order or case ids)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AftersalesMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.opened = Counter(
            "kefu_aftersales_cases_opened_total",
            "Cases opened, by kind and origin (http, inquiry, marketplace_review).",
            ["kind", "origin"],
            registry=registry,
        )
        self.decisions = Counter(
            "kefu_aftersales_decisions_total",
            "Review decisions by kind, verdict, deciding rule and who decided (policy/supervisor).",
            ["kind", "verdict", "rule", "decided_by"],
            registry=registry,
        )
        self.transitions = Counter(
            "kefu_aftersales_transitions_total",
            "State changes by kind and target state; override=true for a supervisor's override.",
            ["kind", "state", "override"],
            registry=registry,
        )
        self.refused = Counter(
            "kefu_aftersales_requests_refused_total",
            "Commands and messages refused as invalid (HTTP 4xx or dead-lettered), by reason.",
            ["reason"],
            registry=registry,
        )
        self.refunds = Counter(
            "kefu_aftersales_refunded_cents_total",
            "Money refunded through after-sales cases, in cents of the currency.",
            ["currency"],
            registry=registry,
        )
        self.reviews = Counter(
            "kefu_aftersales_marketplace_reviews_total",
            "Marketplace reviews seen, by marketplace and rating (1-5).",
            ["marketplace", "rating"],
            registry=registry,
        )
        self.review_replies = Counter(
            "kefu_aftersales_review_replies_total",
            "Replies to negative reviews, by whether they met the deadline.",
            ["within_deadline"],
            registry=registry,
        )
        self.replies_overdue = Counter(
            "kefu_aftersales_review_replies_overdue_total",
            "Negative reviews left without a reply past their deadline, by marketplace.",
            ["marketplace"],
            registry=registry,
        )
        self.resolution_seconds = Histogram(
            "kefu_aftersales_case_resolution_seconds",
            "From opening to closing a case, by kind and resolution.",
            ["kind", "resolution"],
            buckets=(3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400),
            registry=registry,
        )
