"""Did the demo show what kefu does? Every service handled traffic and every KPI has a value.

A demo that ends with "0 %" satisfaction or no next-response times has not shown the supervisor
anything, whatever the reason (a simulated agent that never answers a follow-up, a survey answer
the feedback service refused). ``kefu run --check`` fails on such gaps, and the test suite runs
a small demo with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TIME_KPIS = ("first_response", "next_response", "resolution")
VOLUME_KPIS = (
    "inquiries_opened",
    "customer_messages",
    "spam_filtered",
    "resolved_by_agent",
    "resolved_by_bot",
)


def kpi_gaps(kpis: Mapping[str, Any]) -> list[str]:
    """The KPIs of a ``GET /kpis`` document that are zero or missing, by their path."""
    gaps: list[str] = []

    def need(path: str, value: Any) -> None:
        if not value:  # None, 0, 0.0, empty list
            gaps.append(path)

    for name in VOLUME_KPIS:
        need(f"volume.{name}", kpis["volume"][name])
    for name in TIME_KPIS:
        need(f"{name}.count", kpis[name]["count"])
        need(f"{name}.p50_seconds", kpis[name]["p50_seconds"])
        need(f"{name}.business_hours.p50_seconds", kpis[name]["business_hours"]["p50_seconds"])
    sla = {s["sla"]: s for s in kpis["sla"]}
    for name in TIME_KPIS:
        need(f"sla.{name}.clocks", sla.get(name, {}).get("clocks"))
        need(f"sla.{name}.hit_rate", sla.get(name, {}).get("hit_rate"))
    need("first_contact_resolution.rate", kpis["first_contact_resolution"]["rate"])
    need("reopen.rate", kpis["reopen"]["rate"])
    csat = kpis["csat"]
    need("csat.rate", csat["rate"])
    need("csat.average_rating", csat["average_rating"])
    need("csat.response.rate", csat["response"]["rate"])
    need("csat.by_dimension", csat["by_dimension"])
    for dimension, rate in csat["by_dimension"].items():
        need(f"csat.by_dimension.{dimension}", rate["rate"])
    need("conversion.rate", kpis["conversion"]["rate"])
    need("lost_orders", kpis["lost_orders"])
    need("agents", [a for a in kpis["agents"] if a["served"]])
    need("peak_hours.busiest", kpis["peak_hours"]["busiest"])
    questions = kpis["frequent_questions"]
    need("frequent_questions.top_categories", questions["top_categories"])
    need("frequent_questions.knowledge_base_misses", questions["knowledge_base_misses"])
    need("frequent_questions.bot_answer.rate", questions["bot_answer"]["rate"])
    return gaps


def idle_services(handled: Mapping[str, float]) -> list[str]:
    """Service instances that handled no message (by instance name)."""
    return sorted(name for name, count in handled.items() if count <= 0)
