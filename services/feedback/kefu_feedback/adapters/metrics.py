"""Prometheus metrics of the feedback service.

Counters for what the service does; gauges for the KPIs of a rolling window, refreshed by a
background loop. Labels are small closed sets (channel, SLA kind, dimension, survey kind,
outcome): never a customer, order or agent id (agents' figures are on the HTTP API).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class FeedbackMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.facts = Counter(
            "kefu_feedback_facts_total",
            "Facts taken from other services' events, by kind and outcome (recorded, duplicate).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.surveys = Counter(
            "kefu_feedback_surveys_total",
            "Survey lifecycle steps by kind and outcome (invited, skipped_<reason>, delivered, "
            "undeliverable, answered).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.follow_ups = Counter(
            "kefu_feedback_follow_ups_total",
            "Low-rating follow-ups raised, by route (supervisor, after_sales).",
            ["route"],
            registry=registry,
        )
        self.response_seconds = Gauge(
            "kefu_feedback_response_seconds",
            "Response and resolution times over the rolling window (clock time), by what is "
            "measured (first_response, next_response, resolution), statistic (mean, p50, p90) "
            "and channel ('all' for every channel).",
            ["measure", "stat", "channel"],
            registry=registry,
        )
        self.sla_hit_ratio = Gauge(
            "kefu_feedback_sla_hit_ratio",
            "Share of SLA clocks stopped in time over the rolling window, by SLA and channel.",
            ["sla", "channel"],
            registry=registry,
        )
        self.ratio = Gauge(
            "kefu_feedback_kpi_ratio",
            "Ratios over the rolling window by KPI (first_contact_resolution, reopen, csat, "
            "survey_response, conversion, bot_answer) and channel.",
            ["kpi", "channel"],
            registry=registry,
        )
        self.csat_dimension = Gauge(
            "kefu_feedback_csat_dimension_ratio",
            "Share of 4-5 ratings per survey dimension over the rolling window.",
            ["dimension"],
            registry=registry,
        )
        self.lost_orders = Gauge(
            "kefu_feedback_lost_orders",
            "Orders lost (unpaid, nobody followed up in time) over the rolling window.",
            registry=registry,
        )
        self.refresh_failures = Counter(
            "kefu_feedback_kpi_refresh_failures_total",
            "Failed refreshes of the KPI gauges (retried at the next interval).",
            registry=registry,
        )
