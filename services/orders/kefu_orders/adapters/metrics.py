"""Prometheus business metrics of the orders service (low-cardinality labels only: no order,
customer or agent ids)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class OrdersMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.commerce_events = Counter(
            "kefu_orders_commerce_events_total",
            "Commerce lifecycle events handled, by kind and outcome "
            "(applied, first_seen, stale, duplicate, rejected).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.reviewed = Counter(
            "kefu_orders_reviewed_total",
            "Order reviews by sales channel and outcome (confirmed, needs_attention).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.courier = Counter(
            "kefu_orders_courier_decisions_total",
            "Courier decisions by outcome (assigned, no_coverage).",
            ["outcome"],
            registry=registry,
        )
        self.follow_up = Counter(
            "kefu_orders_follow_up_total",
            "Unpaid-order follow-up by step (first_reminder, second_reminder, lost, "
            "loss_recovered, expired).",
            ["step"],
            registry=registry,
        )
        self.shipping_notices = Counter(
            "kefu_orders_shipping_notices_total",
            "Shipping notices requested, by sales channel.",
            ["channel"],
            registry=registry,
        )
        self.changes = Counter(
            "kefu_orders_change_requests_total",
            "Order change requests by outcome (changed, verification_failed, refused, invalid).",
            ["outcome"],
            registry=registry,
        )
        self.attributions = Counter(
            "kefu_orders_attributions_total",
            "Attribution decisions by rule and whether an agent got the order.",
            ["rule", "credited"],
            registry=registry,
        )
        self.revoked = Counter(
            "kefu_orders_attributions_revoked_total",
            "Deals revoked, by reason (refunded, cancelled).",
            ["reason"],
            registry=registry,
        )
        self.contacts = Counter(
            "kefu_orders_contacts_recorded_total",
            "Agent contacts added to customers' timelines, by source (inquiry, recorded).",
            ["source"],
            registry=registry,
        )
