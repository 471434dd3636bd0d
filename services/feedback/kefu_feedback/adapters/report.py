"""The KPI document (the JSON of ``GET /kpis``) and the supervisor's report made from it.

The report reads the way a supervisor goes through it on Monday: the headline numbers and the
weak points first, then response times and SLAs, satisfaction, conversion and the agents'
scores, and what to plan and fix (peak hours, frequent questions the bot could not answer).
Markdown (charts as PNG files beside it) or one self-contained HTML file (charts inline SVG).
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

from kefu_feedback.adapters import charts
from kefu_feedback.domain.kpis import KpiReport, Rate, Stats, TimeKpi

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


# --- the KPI document ---------------------------------------------------------------------


def _rate(rate: Rate) -> dict[str, Any]:
    return {"numerator": rate.numerator, "denominator": rate.denominator, "rate": rate.value}


def _stats(s: Stats) -> dict[str, Any]:
    return {"count": s.count, "mean_seconds": s.mean, "p50_seconds": s.p50, "p90_seconds": s.p90}


def _time(t: TimeKpi) -> dict[str, Any]:
    return {
        **_stats(t.clock),
        "business_hours": _stats(t.business),
        "distribution": [{"le_seconds": b, "count": n} for b, n in t.distribution],
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def kpi_document(r: KpiReport, timezone: str, baseline_percent: float) -> dict[str, Any]:
    q = r.query
    busiest = sorted(
        ((n, d, h) for d, row in enumerate(r.peak_hours) for h, n in enumerate(row) if n),
        key=lambda x: (-x[0], x[1], x[2]),
    )[:5]
    return {
        "period": {
            "from": _iso(q.start),
            "to": _iso(q.end),
            "channel": q.channel,
            "category": q.category,
            "agent_id": q.agent_id,
        },
        "volume": {
            "inquiries_opened": r.inquiries_opened,
            "customer_messages": r.customer_messages,
            "spam_filtered": r.spam_filtered,
            "resolved_by_agent": r.resolved_by_agent,
            "resolved_by_bot": r.resolved_by_bot,
        },
        "first_response": _time(r.first_response),
        "next_response": _time(r.next_response),
        "resolution": _time(r.resolution),
        "sla": [
            {"sla": s.sla, "clocks": s.clocks, "missed": s.missed, "hit_rate": s.hit_rate}
            for s in r.sla
        ],
        "first_contact_resolution": {
            **_rate(r.first_contact_resolution),
            "reopen_window_days": r.reopen_window_days,
            "provisional_after": _iso(r.provisional_after),
        },
        "reopen": _rate(r.reopen),
        "csat": {
            **_rate(r.csat),
            "average_rating": r.average_rating,
            "by_dimension": {d: _rate(rate) for d, rate in r.csat_by_dimension.items()},
            "response": _rate(r.survey_response),
        },
        "conversion": {**_rate(r.conversion), "baseline_percent": baseline_percent},
        "agents": [
            {
                "agent_id": a.agent_id,
                "served": a.served,
                "deals": a.deals,
                "conversion_rate": a.conversion,
                "conversion_points": a.conversion_points,
                "lost_orders": a.lost_orders,
                "lost_order_points": a.lost_order_points,
                "score": a.score,
                "replies": a.replies,
                "csat": _rate(a.csat),
            }
            for a in r.agents
        ],
        "lost_orders": r.lost_orders,
        "peak_hours": {
            "timezone": timezone,
            "grid": r.peak_hours,
            "busiest": [{"weekday": d, "hour": h, "messages": n} for n, d, h in busiest],
        },
        "frequent_questions": {
            "top_categories": [{"category": c, "inquiries": n} for c, n in r.top_categories],
            "knowledge_base_misses": [
                {"question": m.question, "category": m.category, "inquiries": m.count}
                for m in r.kb_misses
            ],
            "bot_answer": _rate(r.bot_answer),
        },
    }


# --- formatting ---------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"  # a bot or a quick agent answers within a second or two
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min" if rest // 60 else f"{hours} h"


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f} %"


def _weak_points(doc: dict[str, Any]) -> list[str]:
    points = []
    for name, rate in doc["csat"]["by_dimension"].items():
        if rate["rate"] is not None and rate["rate"] < 0.7:
            points.append(
                f"Satisfaction with {charts.DIMENSION_LABELS[name].lower()} is only "
                f"{percent(rate['rate'])} ({rate['denominator']} answers)."
            )
    for s in doc["sla"]:
        if s["hit_rate"] is not None and s["hit_rate"] < 0.9:
            points.append(
                f"{s['sla'].replace('_', ' ').capitalize()} SLA met in {percent(s['hit_rate'])} "
                f"of {s['clocks']} cases ({s['missed']} missed)."
            )
    for a in doc["agents"]:
        if a["score"] < 0:
            points.append(f"Agent {a['agent_id']} scores {a['score']:+.1f} points.")
    misses = doc["frequent_questions"]["knowledge_base_misses"]
    if misses:
        top = misses[0]
        points.append(
            f"Most asked question the bot could not answer: \u201c{top['question']}\u201d "
            f"({top['inquiries']} times): add it to the knowledge base."
        )
    return points


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _sections(doc: dict[str, Any]) -> list[tuple[str, list[str], str | None]]:
    """(title, markdown lines, chart key or None), in reading order."""
    period = doc["period"]
    volume = doc["volume"]
    fr, nr, res = doc["first_response"], doc["next_response"], doc["resolution"]
    fcr, csat, conv = doc["first_contact_resolution"], doc["csat"], doc["conversion"]
    headline = [
        f"- **{volume['inquiries_opened']}** inquiries opened, "
        f"{volume['customer_messages']} customer messages, "
        f"{volume['spam_filtered']} adverts filtered.",
        f"- First response: median **{duration(fr['p50_seconds'])}**, "
        f"90 % within {duration(fr['p90_seconds'])}.",
        f"- Satisfaction (CSAT): **{percent(csat['rate'])}** of {csat['denominator']} answers; "
        f"survey response rate {percent(csat['response']['rate'])}.",
        f"- First-contact resolution: **{percent(fcr['rate'])}**; "
        f"reopened: {percent(doc['reopen']['rate'])}.",
        f"- Conversion: **{percent(conv['rate'])}** ({conv['numerator']} deals / "
        f"{conv['denominator']} customers served; baseline {conv['baseline_percent']:.0f} %); "
        f"lost orders: {doc['lost_orders']}.",
    ]
    weak = _weak_points(doc) or ["Nothing below its threshold this period."]
    times = _table(
        ["", "count", "mean", "median", "90 %", "median in business hours"],
        [
            [
                label,
                str(t["count"]),
                duration(t["mean_seconds"]),
                duration(t["p50_seconds"]),
                duration(t["p90_seconds"]),
                duration(t["business_hours"]["p50_seconds"]),
            ]
            for label, t in (("First response", fr), ("Next response", nr), ("Resolution", res))
        ],
    )
    sla = _table(
        ["SLA", "clocks", "missed", "met"],
        [
            [s["sla"].replace("_", " "), str(s["clocks"]), str(s["missed"]), percent(s["hit_rate"])]
            for s in doc["sla"]
        ],
    )
    satisfaction = _table(
        ["dimension", "answers", "satisfied"],
        [
            [charts.DIMENSION_LABELS[d], str(r["denominator"]), percent(r["rate"])]
            for d, r in csat["by_dimension"].items()
        ],
    )
    agents = _table(
        ["agent", "served", "deals", "conversion", "points", "lost orders", "score", "CSAT"],
        [
            [
                a["agent_id"],
                str(a["served"]),
                str(a["deals"]),
                percent(a["conversion_rate"]),
                f"{a['conversion_points']:+.1f}",
                f"{a['lost_orders']} ({a['lost_order_points']:+.1f})",
                f"**{a['score']:+.1f}**",
                percent(a["csat"]["rate"]),
            ]
            for a in doc["agents"]
        ],
    )
    peaks = [
        f"- {WEEKDAY_NAMES[p['weekday']]} {p['hour']:02d}:00-{p['hour'] + 1:02d}:00: "
        f"{p['messages']} messages"
        for p in doc["peak_hours"]["busiest"]
    ] or ["- No customer messages in the period."]
    fq = doc["frequent_questions"]
    categories = _table(
        ["category", "inquiries"],
        [[c["category"], str(c["inquiries"])] for c in fq["top_categories"]],
    )
    misses = _table(
        ["question", "category", "times"],
        [
            [m["question"].replace("|", "/"), m["category"], str(m["inquiries"])]
            for m in fq["knowledge_base_misses"]
        ],
    )
    scope = ", ".join(
        f"{k} {v}" for k, v in period.items() if k in ("channel", "category", "agent_id") and v
    )
    return [
        ("Summary" + (f" ({scope})" if scope else ""), headline, None),
        ("Weak points", [f"- {p}" for p in weak], None),
        ("Response and resolution times", times, "response_times"),
        ("Service levels", sla, None),
        (
            "Satisfaction",
            [
                f"Average rating {csat['average_rating']:.2f} / 5."
                if csat["average_rating"] is not None
                else "No answers yet.",
                "",
                *satisfaction,
            ],
            "csat_by_dimension",
        ),
        (
            "Agents: conversion and score",
            [
                "Score = (conversion % - baseline) x 0.5 - 0.5 per lost order "
                "(after-sales contacts and adverts are not counted as served; refunded orders "
                "are not deals).",
                "",
                *agents,
            ],
            None,
        ),
        ("Peak hours (for the shift plan)", peaks, "peak_hours"),
        (
            "Frequent questions (for the knowledge base)",
            [
                f"The bot answered {percent(fq['bot_answer']['rate'])} of new inquiries.",
                "",
                *categories,
                "",
                "Questions the bot could not answer:",
                "",
                *misses,
            ],
            None,
        ),
    ]


def _title(doc: dict[str, Any]) -> str:
    period = doc["period"]
    return f"Customer service report, {period['from'][:10]} to {period['to'][:10]}"


def render_markdown(doc: dict[str, Any], charts_dir: str) -> tuple[str, dict[str, bytes]]:
    """The report and its charts (file name -> PNG bytes, to write under ``charts_dir``)."""
    lines = [f"# {_title(doc)}", ""]
    images: dict[str, bytes] = {}
    for title, body, chart in _sections(doc):
        lines += [f"## {title}", "", *body, ""]
        if chart is not None:
            name = f"{chart}.png"
            images[name] = charts.CHARTS[chart][1](doc, "png")
            lines += [f"![{charts.CHARTS[chart][0]}]({charts_dir}/{name})", ""]
    return "\n".join(lines), images


def _markdown_inline(text: str) -> str:
    """The few inline marks the sections use (bold), escaped for HTML."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _html_block(lines: list[str]) -> str:
    out: list[str] = []
    table: list[list[str]] = []
    bullets: list[str] = []

    def flush() -> None:
        if table:
            head, *rows = table
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_markdown_inline(c)}</th>" for c in head)
                + "</tr></thead><tbody>"
                + "".join(
                    "<tr>" + "".join(f"<td>{_markdown_inline(c)}</td>" for c in row) + "</tr>"
                    for row in rows
                )
                + "</tbody></table>"
            )
            table.clear()
        if bullets:
            out.append(
                "<ul>" + "".join(f"<li>{_markdown_inline(b)}</li>" for b in bullets) + "</ul>"
            )
            bullets.clear()

    for line in lines:
        if line.startswith("|---"):
            continue
        if line.startswith("| "):
            table.append([c.strip() for c in line.strip("|").split(" | ")])
            continue
        if line.startswith("- "):
            bullets.append(line[2:])
            continue
        flush()
        if line:
            out.append(f"<p>{_markdown_inline(line)}</p>")
    flush()
    return "\n".join(out)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } figure { margin: 1em 0; } svg { max-width: 100%; height: auto; }
"""


def render_html(doc: dict[str, Any]) -> str:
    """One self-contained page: charts inline as SVG (no files to keep together)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(_title(doc))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(_title(doc))}</h1>",
    ]
    for title, body, chart in _sections(doc):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_block(body)]
        if chart is not None:
            label, draw = charts.CHARTS[chart]
            svg = draw(doc, "svg").decode()
            svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype
            parts.append(f'<figure aria-label="{html.escape(label)}">{svg}</figure>')
    parts.append("</body></html>")
    return "\n".join(parts)
