"""kefu's Grafana dashboards as code: this file writes ``dashboards/*.json``.

    uv run python deploy/observability/grafana/dashboards.py          # write the JSON
    uv run python deploy/observability/grafana/dashboards.py --check  # fail if it is stale

Grafana provisions the JSON (``provisioning/dashboards/kefu.yml``); the tests in
tests/observability check that the committed JSON is what this file generates, that it loads,
and that every query names a metric the running services export (and runs on a real
Prometheus). Only the standard library is used, so it runs anywhere.

Label conventions (docs/observability.md): ``job`` is ``kefu-<instance>`` from the scrape
config, the kernel's metrics carry ``service``, FastStream's carry ``app_name="kefu-<service>"``
and ``handler`` (the topic consumed) or ``destination`` (the topic published to).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
SERVICES = ("inquiry", "notifier", "orders", "aftersales", "feedback")


# --- panels ---------------------------------------------------------------------------------


@dataclass
class Q:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Panel:
    title: str
    queries: Sequence[Q]
    kind: str = "timeseries"  # timeseries | stat | bargauge
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    stack: bool = False
    thresholds: Sequence[tuple[str, float | None]] = ()
    decimals: int | None = None
    min: float | None = None
    max: float | None = None


@dataclass
class Row:
    title: str
    panels: Sequence[Panel]
    collapsed: bool = False


@dataclass
class Variable:
    name: str
    label: str
    query: str  # label_values(...)
    all_value: str = ".*"


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: Sequence[Row]
    variables: Sequence[Variable] = ()
    tags: Sequence[str] = field(default_factory=lambda: ("kefu",))
    time_from: str = "now-6h"


def _targets(queries: Sequence[Q]) -> list[dict[str, Any]]:
    targets = []
    for i, q in enumerate(queries):
        target: dict[str, Any] = {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "range": not q.instant,
            "instant": q.instant,
        }
        if q.instant:
            target["format"] = "time_series"
        targets.append(target)
    return targets


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for c, v in panel.thresholds] or [
        {"color": "green", "value": None}
    ]
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "color": {"mode": "thresholds" if panel.thresholds else "palette-classic"},
    }
    for key in ("decimals", "min", "max"):
        if getattr(panel, key) is not None:
            defaults[key] = getattr(panel, key)
    options: dict[str, Any]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 15 if panel.stack else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if panel.thresholds else "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value_and_name",
        }
    elif panel.kind == "bargauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "basic",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    else:
        raise ValueError(f"unknown panel kind {panel.kind}")
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": _targets(panel.queries),
    }


def _variable_json(var: Variable) -> dict[str, Any]:
    return {
        "name": var.name,
        "label": var.label,
        "type": "query",
        "datasource": DS,
        "definition": var.query,
        "query": {"query": var.query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "allValue": var.all_value,
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "regex": "",
        "options": [],
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in dashboard.rows:
        row_json: dict[str, Any] = {
            "id": next_id,
            "type": "row",
            "title": row.title,
            "collapsed": row.collapsed,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": [],
        }
        next_id += 1
        y += 1
        panels.append(row_json)
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += line_height
                line_height = 0
            rendered = _panel_json(panel, next_id, x, y)
            next_id += 1
            (row_json["panels"] if row.collapsed else panels).append(rendered)
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    templating = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        },
        *(_variable_json(v) for v in dashboard.variables),
    ]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": ["kefu"],
                "asDropdown": True,
                "title": "kefu dashboards",
                "includeVars": False,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": templating},
        "panels": panels,
    }


# --- shared building blocks ------------------------------------------------------------------

UP = [("red", None), ("green", 1)]
ZERO_IS_GOOD = [("green", None), ("red", 1)]


def lag_by_group(selector: str = "") -> str:
    """Lag per (service, group, topic); replicas measuring the same partition count once."""
    return (
        "sum by (service, group, topic) ("
        f"max by (service, group, topic, partition) (kefu_consumer_lag_messages{selector})"
        ")"
    )


def consumer_error_ratio(service: str = "") -> str:
    """Dead-lettered / consumed, per service (FastStream's app_name is kefu-<service>)."""
    dead = (
        f'kefu_dead_letters_total{{service="{service}"}}' if service else "kefu_dead_letters_total"
    )
    consumed = (
        f'faststream_received_messages_total{{app_name="kefu-{service}"}}'
        if service
        else "faststream_received_messages_total"
    )
    return (
        f"sum by (service) (rate({dead}[{RATE}]))\n  / on (service)\n"
        f"sum by (service) (label_replace(rate({consumed}[{RATE}]), "
        '"service", "$1", "app_name", "kefu-(.+)"))'
    )


def service_rows(service: str) -> list[Row]:
    """The kernel's signals for one service: consumers, publishing, Kafka, outbox."""
    app = f'app_name="kefu-{service}", instance=~"$instance"'
    svc = f'service="{service}", instance=~"$instance"'
    return [
        Row(
            "Health",
            [
                Panel(
                    "Instances up",
                    [
                        Q(
                            f'up{{job=~"kefu-{service}(-.+)?", instance=~"$instance"}}',
                            "{{instance}}",
                        )
                    ],
                    kind="stat",
                    thresholds=UP,
                    width=6,
                    height=5,
                    description="1: Prometheus scrapes the instance. Alert: KefuServiceDown.",
                ),
                Panel(
                    "Messages consumed /s",
                    [
                        Q(
                            f"sum(rate(faststream_received_messages_total{{{app}}}[{RATE}]))",
                            "consumed",
                        )
                    ],
                    kind="stat",
                    unit="reqps",
                    width=6,
                    height=5,
                ),
                Panel(
                    "Dead letters (range)",
                    [
                        Q(
                            f"sum(increase(kefu_dead_letters_total{{{svc}}}[$__range]))",
                            "dead letters",
                        )
                    ],
                    kind="stat",
                    thresholds=ZERO_IS_GOOD,
                    width=6,
                    height=5,
                    decimals=0,
                ),
                Panel(
                    "Oldest outbox event",
                    [Q(f"max(kefu_outbox_oldest_age_seconds{{{svc}}})", "age")],
                    kind="stat",
                    unit="s",
                    thresholds=[("green", None), ("orange", 10), ("red", 60)],
                    width=6,
                    height=5,
                ),
            ],
        ),
        Row(
            "HTTP API: rate, errors, latency by route",
            [
                Panel(
                    "Requests /s by route and status",
                    [
                        Q(
                            "sum by (route, status) (rate("
                            f"kefu_http_requests_total{{{svc}}}[{RATE}]))",
                            "{{route}} {{status}}",
                        )
                    ],
                    unit="reqps",
                    description="Route templates, never raw paths: ids are not label values.",
                ),
                Panel(
                    "Latency p50 / p95 by route",
                    [
                        Q(
                            f"histogram_quantile({q}, sum by (route, le) (rate("
                            "kefu_http_request_duration_seconds_bucket"
                            f"{{{svc}}}[{RATE}])))",
                            f"p{int(q * 100)} {{{{route}}}}",
                        )
                        for q in (0.5, 0.95)
                    ],
                    unit="s",
                ),
            ],
        ),
        Row(
            "Consumers (FastStream): rate, errors, duration",
            [
                Panel(
                    "Messages consumed /s by topic",
                    [
                        Q(
                            per("handler", "faststream_received_messages_total", app),
                            "{{handler}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "Processing outcome /s by topic and status",
                    [
                        Q(
                            "sum by (handler, status) (rate("
                            f"faststream_received_processed_messages_total{{{app}}}[{RATE}]))",
                            "{{handler}} {{status}}",
                        )
                    ],
                    unit="reqps",
                    description="acked is normal: a message the service could not process is "
                    "dead-lettered and then acked, so watch the dead-letter panels for errors.",
                ),
                Panel(
                    "Processing duration p50 / p95 by topic",
                    [
                        Q(
                            f"histogram_quantile({q}, sum by (handler, le) (rate("
                            "faststream_received_processed_messages_duration_seconds_bucket"
                            f"{{{app}}}[{RATE}])))",
                            f"p{int(q * 100)} {{{{handler}}}}",
                        )
                        for q in (0.5, 0.95)
                    ],
                    unit="s",
                    description="Includes retries with backoff: a slow dependency shows here. "
                    "Batch consumers (inquiry intake, notification requests, webhook fan-out) "
                    "report one duration per batch of up to CONSUMER_BATCH_RECORDS records.",
                ),
                Panel(
                    "Messages in process and exceptions",
                    [
                        Q(
                            f"sum by (handler) (faststream_received_messages_in_process{{{app}}})",
                            "in process {{handler}}",
                        ),
                        Q(
                            "sum by (handler, exception_type) (rate("
                            f"faststream_received_processed_messages_exceptions_total{{{app}}}[{RATE}]))",
                            "exceptions/s {{handler}} {{exception_type}}",
                        ),
                    ],
                ),
                Panel(
                    "Message size p95 by topic",
                    [
                        Q(
                            "histogram_quantile(0.95, sum by (handler, le) (rate("
                            f"faststream_received_messages_size_bytes_bucket{{{app}}}[{RATE}])))",
                            "{{handler}}",
                        )
                    ],
                    unit="bytes",
                ),
                Panel(
                    "Dead-letter ratio",
                    [Q(consumer_error_ratio(service), "{{service}}")],
                    unit="percentunit",
                    description="Share of consumed messages that ended in the dead-letter topic. "
                    "Alert: KefuConsumerErrorRateHigh (> 5% for 10 min).",
                ),
            ],
        ),
        Row(
            "Kafka: lag, dead letters, retries, publishing",
            [
                Panel(
                    "Consumer lag by partition",
                    [
                        Q(
                            "max by (group, topic, partition) ("
                            f"kefu_consumer_lag_messages{{{svc}}})",
                            "{{group}} {{topic}}[{{partition}}]",
                        )
                    ],
                    description="Alerts: KefuConsumerLagGrowing, KefuConsumerLagHigh.",
                ),
                Panel(
                    "Dead letters /s by topic and error",
                    [
                        Q(
                            "sum by (topic, error_type) (rate("
                            f"kefu_dead_letters_total{{{svc}}}[{RATE}]))",
                            "{{topic}} {{error_type}}",
                        )
                    ],
                    description="Alert: KefuDeadLettersGrowing.",
                ),
                Panel(
                    "Retries /s by topic and kind",
                    [
                        Q(
                            "sum by (topic, kind) (rate("
                            f"kefu_message_retries_total{{{svc}}}[{RATE}]))",
                            "{{topic}} {{kind}}",
                        )
                    ],
                    description="transient: MongoDB or Kafka unreachable (waited out); error: a "
                    "handler failed (retried, then dead-lettered). Alert: KefuMessageRetriesHigh.",
                ),
                Panel(
                    "Published /s by topic and status, publish p95",
                    [
                        Q(
                            "sum by (destination, status) (rate("
                            f"faststream_published_messages_total{{{app}}}[{RATE}]))",
                            "{{destination}} {{status}}",
                        ),
                        Q(
                            "histogram_quantile(0.95, sum by (destination, le) (rate("
                            f"faststream_published_messages_duration_seconds_bucket{{{app}}}[{RATE}])))",
                            "p95 seconds {{destination}}",
                        ),
                        Q(
                            "sum by (destination, exception_type) (rate("
                            f"faststream_published_messages_exceptions_total{{{app}}}[{RATE}]))",
                            "errors {{destination}} {{exception_type}}",
                        ),
                    ],
                ),
            ],
        ),
        Row(
            "Transactional outbox",
            [
                Panel(
                    "Outbox backlog (documents) and oldest event age",
                    [
                        Q(f"max(kefu_outbox_backlog_documents{{{svc}}})", "documents waiting"),
                        Q(f"max(kefu_outbox_oldest_age_seconds{{{svc}}})", "oldest age (s)"),
                    ],
                    description="Alert: KefuOutboxBacklogOld (oldest > 60 s for 5 min).",
                ),
                Panel(
                    "Outbox events relayed /s and failures /s",
                    [
                        Q(f"sum(rate(kefu_outbox_published_total{{{svc}}}[{RATE}]))", "relayed"),
                        Q(
                            f"sum(rate(kefu_outbox_publish_failures_total{{{svc}}}[{RATE}]))",
                            "failures",
                        ),
                        Q(
                            f"sum(rate(kefu_kafka_producer_renewals_total{{{svc}}}[{RATE}]))",
                            "producer renewals",
                        ),
                    ],
                    unit="reqps",
                    description="Alerts: KefuOutboxPublishFailing, KefuKafkaProducerRenewing "
                    "(a new producer after Kafka refused the old one's sequence).",
                ),
            ],
        ),
    ]


def instance_variable(service: str) -> Variable:
    return Variable(
        "instance", "Instance", f'label_values(up{{job=~"kefu-{service}(-.+)?"}}, instance)'
    )


def per(expr_by: str, metric: str, selector: str = "", window: str = RATE) -> str:
    sel = f"{{{selector}}}" if selector else ""
    return f"sum by ({expr_by}) (rate({metric}{sel}[{window}]))"


def hourly(expr_by: str, metric: str, selector: str = "") -> str:
    sel = f"{{{selector}}}" if selector else ""
    return f"sum by ({expr_by}) (increase({metric}{sel}[1h]))"


def in_range(expr_by: str, metric: str, selector: str = "") -> str:
    sel = f"{{{selector}}}" if selector else ""
    return f"sum by ({expr_by}) (increase({metric}{sel}[$__range]))"


# --- the dashboards --------------------------------------------------------------------------


def overview() -> Dashboard:
    return Dashboard(
        uid="kefu-overview",
        title="kefu / Overview",
        description="Golden signals of every kefu service, consumer lag, dead letters and "
        "outboxes. Start here; the per-service dashboards have the detail.",
        time_from="now-3h",
        rows=[
            Row(
                "Now",
                [
                    Panel(
                        "Instances up by job",
                        [Q('sum by (job) (up{job=~"kefu-.+"})', "{{job}}")],
                        kind="stat",
                        thresholds=UP,
                        width=8,
                        height=5,
                        description="Instances Prometheus scrapes per job; red means none. "
                        "Alert: KefuServiceDown.",
                    ),
                    Panel(
                        "Largest consumer lag",
                        [Q(f"max({lag_by_group()})", "messages")],
                        kind="stat",
                        thresholds=[("green", None), ("orange", 100), ("red", 10000)],
                        width=4,
                        height=5,
                    ),
                    Panel(
                        "Dead letters (range)",
                        [Q("sum(increase(kefu_dead_letters_total[$__range]))", "dead letters")],
                        kind="stat",
                        thresholds=ZERO_IS_GOOD,
                        decimals=0,
                        width=4,
                        height=5,
                    ),
                    Panel(
                        "Oldest outbox event",
                        [Q("max(kefu_outbox_oldest_age_seconds)", "age")],
                        kind="stat",
                        unit="s",
                        thresholds=[("green", None), ("orange", 10), ("red", 60)],
                        width=4,
                        height=5,
                    ),
                    Panel(
                        "Messages consumed /s",
                        [Q(f"sum(rate(faststream_received_messages_total[{RATE}]))", "all")],
                        kind="stat",
                        unit="reqps",
                        width=4,
                        height=5,
                    ),
                ],
            ),
            Row(
                "Golden signals per service (Kafka consumers)",
                [
                    Panel(
                        "Traffic: messages consumed /s",
                        [Q(per("app_name", "faststream_received_messages_total"), "{{app_name}}")],
                        unit="reqps",
                        stack=True,
                        width=8,
                    ),
                    Panel(
                        "Errors: dead-letter ratio",
                        [Q(consumer_error_ratio(), "{{service}}")],
                        unit="percentunit",
                        width=8,
                        description="Dead-lettered / consumed. Alert: KefuConsumerErrorRateHigh.",
                    ),
                    Panel(
                        "Latency: processing p95",
                        [
                            Q(
                                "histogram_quantile(0.95, sum by (app_name, le) (rate("
                                "faststream_received_processed_messages_duration_seconds_bucket"
                                f"[{RATE}])))",
                                "{{app_name}}",
                            )
                        ],
                        unit="s",
                        width=8,
                        description="Per handled message, or per batch for batch consumers.",
                    ),
                    Panel(
                        "Saturation: messages in process",
                        [
                            Q(
                                "sum by (app_name) (faststream_received_messages_in_process)",
                                "{{app_name}}",
                            )
                        ],
                        width=8,
                    ),
                    Panel(
                        "Retries /s by service and kind",
                        [
                            Q(
                                per("service, kind", "kefu_message_retries_total"),
                                "{{service}} {{kind}}",
                            )
                        ],
                        width=8,
                        description="transient: a dependency is down (partitions wait); error: "
                        "handlers fail. Alert: KefuMessageRetriesHigh.",
                    ),
                    Panel(
                        "Published /s by service and status",
                        [
                            Q(
                                per("app_name, status", "faststream_published_messages_total"),
                                "{{app_name}} {{status}}",
                            )
                        ],
                        unit="reqps",
                        width=8,
                    ),
                ],
            ),
            Row(
                "Consumer lag and dead letters",
                [
                    Panel(
                        "Consumer lag by service, group and topic",
                        [Q(lag_by_group(), "{{group}} {{topic}}")],
                        description="Alerts: KefuConsumerLagGrowing, KefuConsumerLagHigh.",
                    ),
                    Panel(
                        "Dead letters /s by service, topic and error",
                        [
                            Q(
                                per("service, topic, error_type", "kefu_dead_letters_total"),
                                "{{service}} {{topic}} {{error_type}}",
                            )
                        ],
                        description="Alert: KefuDeadLettersGrowing.",
                    ),
                    Panel(
                        "Dead letters in range by service and topic",
                        [
                            Q(
                                in_range("service, topic", "kefu_dead_letters_total"),
                                "{{service}} {{topic}}",
                                instant=True,
                            )
                        ],
                        kind="bargauge",
                        decimals=0,
                        width=24,
                        height=6,
                    ),
                ],
            ),
            Row(
                "Transactional outbox",
                [
                    Panel(
                        "Oldest outbox event by service",
                        [Q("max by (service) (kefu_outbox_oldest_age_seconds)", "{{service}}")],
                        unit="s",
                        width=8,
                        description="Alert: KefuOutboxBacklogOld.",
                    ),
                    Panel(
                        "Outbox backlog (documents) by service",
                        [Q("max by (service) (kefu_outbox_backlog_documents)", "{{service}}")],
                        width=8,
                    ),
                    Panel(
                        "Outbox relayed /s and failures /s",
                        [
                            Q(per("service", "kefu_outbox_published_total"), "relayed {{service}}"),
                            Q(
                                per("service", "kefu_outbox_publish_failures_total"),
                                "failures {{service}}",
                            ),
                        ],
                        unit="reqps",
                        width=8,
                        description="Alert: KefuOutboxPublishFailing.",
                    ),
                ],
            ),
        ],
    )


def inquiry() -> Dashboard:
    sel = 'instance=~"$instance"'
    return Dashboard(
        uid="kefu-inquiry",
        title="kefu / Inquiry",
        description="Customer inquiries from every channel: intake, classification, bot "
        "answers, routing, SLA alarms; and the service's consumers, lag and outbox.",
        variables=[instance_variable("inquiry")],
        rows=[
            Row(
                "Intake by channel",
                [
                    Panel(
                        "Customer messages /s by channel and outcome",
                        [
                            Q(
                                per("channel, outcome", "kefu_inquiry_messages_total", sel),
                                "{{channel}} {{outcome}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                        description="opened: a new inquiry; joined: added to the customer's "
                        "open inquiry; spam; duplicate: a redelivery recognised.",
                    ),
                    Panel(
                        "First response p50 / p90 by channel (customer message to agent reply)",
                        [
                            Q(
                                f"histogram_quantile({q}, sum by (channel, le) (rate("
                                "kefu_inquiry_first_response_seconds_bucket"
                                f"{{{sel}}}[{RATE}])))",
                                f"p{int(q * 100)} {{{{channel}}}}",
                            )
                            for q in (0.5, 0.9)
                        ],
                        unit="s",
                        description="The handbook's response-time KPI, live; the feedback "
                        "service computes the exact figures per period.",
                    ),
                    Panel(
                        "Rejected messages /s by channel and reason",
                        [
                            Q(
                                per("channel, reason", "kefu_inquiry_messages_rejected_total", sel),
                                "{{channel}} {{reason}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "New inquiries /s by category",
                        [
                            Q(
                                per("category", "kefu_inquiry_classified_total", sel),
                                "{{category}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                    ),
                    Panel(
                        "Needing human triage and answered by the bot (share of new inquiries)",
                        [
                            Q(
                                "sum(rate(kefu_inquiry_classified_total"
                                f'{{needs_human="true", {sel}}}[{RATE}]))'
                                f"\n  / sum(rate(kefu_inquiry_classified_total{{{sel}}}[{RATE}]))",
                                "needs a human",
                            ),
                            Q(
                                f"sum(rate(kefu_inquiry_auto_answered_total{{{sel}}}[{RATE}]))\n"
                                "  / sum(rate(kefu_inquiry_messages_total"
                                f'{{outcome="opened", {sel}}}[{RATE}]))',
                                "answered by the bot",
                            ),
                        ],
                        unit="percentunit",
                        min=0,
                        max=1,
                    ),
                ],
            ),
            Row(
                "Routing and SLA",
                [
                    Panel(
                        "Assignments to agents /s by channel",
                        [Q(per("channel", "kefu_inquiry_assigned_total", sel), "{{channel}}")],
                        unit="reqps",
                    ),
                    Panel(
                        "SLA warnings and breaches per hour by channel and SLA",
                        [
                            Q(
                                hourly("channel, sla, alarm", "kefu_inquiry_sla_alarms_total", sel),
                                "{{alarm}} {{channel}} {{sla}}",
                            )
                        ],
                        description="Alert: KefuSlaBreachRateHigh (breaches > 10% of new "
                        "inquiries over 30 min).",
                    ),
                ],
            ),
            *service_rows("inquiry"),
        ],
    )


def notifier() -> Dashboard:
    sel = 'instance=~"$instance"'
    return Dashboard(
        uid="kefu-notifier",
        title="kefu / Notifier",
        description="Every customer notification (sent, failed, deferred, suppressed), provider "
        "calls, webhooks; and the service's consumers, lag and outbox.",
        variables=[instance_variable("notifier")],
        rows=[
            Row(
                "Notifications",
                [
                    Panel(
                        "Notifications /s by channel and status",
                        [
                            Q(
                                per("channel, status", "kefu_notifications_total", sel),
                                "{{channel}} {{status}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                    ),
                    Panel(
                        "Notifications /s by purpose and status",
                        [
                            Q(
                                per("purpose, status", "kefu_notifications_total", sel),
                                "{{purpose}} {{status}}",
                            )
                        ],
                        unit="reqps",
                        stack=True,
                    ),
                    Panel(
                        "Failure ratio by channel",
                        [
                            Q(
                                "sum by (channel) (rate(kefu_notifications_total"
                                f'{{status="failed", {sel}}}[{RATE}]))'
                                "\n  / sum by (channel) (rate(kefu_notifications_total"
                                f'{{status=~"sent|failed", {sel}}}[{RATE}]))',
                                "{{channel}}",
                            )
                        ],
                        unit="percentunit",
                        description="Alert: KefuNotificationFailureRateHigh (> 10% for 15 min).",
                    ),
                    Panel(
                        "Provider calls /s by channel and outcome",
                        [
                            Q(
                                per(
                                    "channel, outcome",
                                    "kefu_notification_provider_attempts_total",
                                    sel,
                                ),
                                "{{channel}} {{outcome}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "Provider call duration p50 / p95 by channel",
                        [
                            Q(
                                f"histogram_quantile({q}, sum by (channel, le) (rate("
                                f"kefu_notification_delivery_seconds_bucket{{{sel}}}[{RATE}])))",
                                f"p{int(q * 100)} {{{{channel}}}}",
                            )
                            for q in (0.5, 0.95)
                        ],
                        unit="s",
                    ),
                ],
            ),
            Row(
                "Webhooks",
                [
                    Panel(
                        "Deliveries recorded /s by source service",
                        [
                            Q(
                                per("source", "kefu_webhook_deliveries_recorded_total", sel),
                                "{{source}}",
                            )
                        ],
                        unit="reqps",
                        width=8,
                    ),
                    Panel(
                        "Webhook POSTs /s by outcome, final statuses",
                        [
                            Q(
                                per("outcome", "kefu_webhook_attempts_total", sel),
                                "attempt {{outcome}}",
                            ),
                            Q(
                                per("status", "kefu_webhook_deliveries_total", sel),
                                "final {{status}}",
                            ),
                        ],
                        unit="reqps",
                        width=8,
                    ),
                    Panel(
                        "Webhook POST p95 and subscriptions disabled",
                        [
                            Q(
                                "histogram_quantile(0.95, sum by (le) (rate("
                                f"kefu_webhook_attempt_seconds_bucket{{{sel}}}[{RATE}])))",
                                "p95 seconds",
                            ),
                            Q(
                                "sum(increase(kefu_webhook_subscriptions_disabled_total"
                                f"{{{sel}}}[1h]))",
                                "disabled per hour",
                            ),
                        ],
                        width=8,
                    ),
                ],
            ),
            *service_rows("notifier"),
        ],
    )


def orders() -> Dashboard:
    sel = 'instance=~"$instance"'
    return Dashboard(
        uid="kefu-orders",
        title="kefu / Orders",
        description="Order follow-up: commerce events, order reviews, couriers, unpaid-order "
        "reminders and lost orders, shipping notices, verified changes, attribution; and the "
        "service's consumers, lag and outbox.",
        variables=[instance_variable("orders")],
        rows=[
            Row(
                "Orders",
                [
                    Panel(
                        "Commerce events /s by kind and outcome",
                        [
                            Q(
                                per("kind, outcome", "kefu_orders_commerce_events_total", sel),
                                "{{kind}} {{outcome}}",
                            )
                        ],
                        unit="reqps",
                        description="applied, first_seen, stale (an older snapshot), duplicate, "
                        "rejected (invalid: dead-lettered).",
                    ),
                    Panel(
                        "Order reviews per hour by sales channel and outcome",
                        [
                            Q(
                                hourly("channel, outcome", "kefu_orders_reviewed_total", sel),
                                "{{channel}} {{outcome}}",
                            )
                        ],
                        stack=True,
                    ),
                    Panel(
                        "Courier decisions per hour",
                        [
                            Q(
                                hourly("outcome", "kefu_orders_courier_decisions_total", sel),
                                "{{outcome}}",
                            )
                        ],
                        description="no_coverage: no courier serves the address; an agent must "
                        "arrange delivery.",
                    ),
                    Panel(
                        "Shipping notices requested per hour by sales channel",
                        [
                            Q(
                                hourly("channel", "kefu_orders_shipping_notices_total", sel),
                                "{{channel}}",
                            )
                        ],
                        stack=True,
                    ),
                ],
            ),
            Row(
                "Unpaid orders, changes and attribution",
                [
                    Panel(
                        "Unpaid-order follow-up per hour by step",
                        [Q(hourly("step", "kefu_orders_follow_up_total", sel), "{{step}}")],
                        description="Reminders, orders lost (nobody followed up in time), losses "
                        "recovered, orders expired.",
                    ),
                    Panel(
                        "Change requests per hour by outcome",
                        [
                            Q(
                                hourly("outcome", "kefu_orders_change_requests_total", sel),
                                "{{outcome}}",
                            )
                        ],
                        description="verification_failed: the customer's identity was not "
                        "confirmed; a burst may be an account-takeover attempt.",
                    ),
                    Panel(
                        "Attribution per hour by rule (credited to an agent or not)",
                        [
                            Q(
                                hourly("rule, credited", "kefu_orders_attributions_total", sel),
                                "{{rule}} credited={{credited}}",
                            ),
                            Q(
                                hourly("reason", "kefu_orders_attributions_revoked_total", sel),
                                "revoked {{reason}}",
                            ),
                        ],
                    ),
                    Panel(
                        "Agent contacts recorded per hour by source",
                        [
                            Q(
                                hourly("source", "kefu_orders_contacts_recorded_total", sel),
                                "{{source}}",
                            )
                        ],
                    ),
                ],
            ),
            *service_rows("orders"),
        ],
    )


def aftersales() -> Dashboard:
    sel = 'instance=~"$instance"'
    return Dashboard(
        uid="kefu-aftersales",
        title="kefu / After-sales",
        description="Returns, refunds, exchanges and marketplace reviews: cases, decisions, "
        "refunds, review replies; and the service's consumers, lag and outbox.",
        variables=[instance_variable("aftersales")],
        rows=[
            Row(
                "Cases and decisions",
                [
                    Panel(
                        "Cases opened per hour by kind and origin",
                        [
                            Q(
                                hourly("kind, origin", "kefu_aftersales_cases_opened_total", sel),
                                "{{kind}} {{origin}}",
                            )
                        ],
                        stack=True,
                    ),
                    Panel(
                        "Decisions per hour by kind, verdict and who decided",
                        [
                            Q(
                                hourly(
                                    "kind, verdict, decided_by",
                                    "kefu_aftersales_decisions_total",
                                    sel,
                                ),
                                "{{kind}} {{verdict}} ({{decided_by}})",
                            )
                        ],
                    ),
                    Panel(
                        "Decisions in range by rule",
                        [
                            Q(
                                in_range("rule, verdict", "kefu_aftersales_decisions_total", sel),
                                "{{rule}} {{verdict}}",
                                instant=True,
                            )
                        ],
                        kind="bargauge",
                        decimals=0,
                    ),
                    Panel(
                        "State changes per hour (overrides separately)",
                        [
                            Q(
                                hourly("state, override", "kefu_aftersales_transitions_total", sel),
                                "{{state}} override={{override}}",
                            )
                        ],
                    ),
                    Panel(
                        "Case resolution time p50 / p90 by kind",
                        [
                            Q(
                                f"histogram_quantile({q}, sum by (kind, le) (rate("
                                f"kefu_aftersales_case_resolution_seconds_bucket{{{sel}}}[1d])))",
                                f"p{int(q * 100)} {{{{kind}}}}",
                            )
                            for q in (0.5, 0.9)
                        ],
                        unit="s",
                    ),
                    Panel(
                        "Refunded per hour by currency",
                        [
                            Q(
                                "sum by (currency) (increase("
                                f"kefu_aftersales_refunded_cents_total{{{sel}}}[1h])) / 100",
                                "{{currency}}",
                            )
                        ],
                        unit="none",
                        description="In currency units (the counter is in cents).",
                    ),
                    Panel(
                        "Refused commands and messages /s by reason",
                        [
                            Q(
                                per("reason", "kefu_aftersales_requests_refused_total", sel),
                                "{{reason}}",
                            )
                        ],
                        unit="reqps",
                    ),
                ],
            ),
            Row(
                "Marketplace reviews",
                [
                    Panel(
                        "Reviews per hour by marketplace and rating",
                        [
                            Q(
                                hourly(
                                    "marketplace, rating",
                                    "kefu_aftersales_marketplace_reviews_total",
                                    sel,
                                ),
                                "{{marketplace}} {{rating}}*",
                            )
                        ],
                        stack=True,
                        width=8,
                    ),
                    Panel(
                        "Replies to negative reviews per hour (in time or late)",
                        [
                            Q(
                                hourly(
                                    "within_deadline", "kefu_aftersales_review_replies_total", sel
                                ),
                                "within deadline: {{within_deadline}}",
                            )
                        ],
                        width=8,
                    ),
                    Panel(
                        "Negative reviews left unanswered past their deadline, per hour",
                        [
                            Q(
                                hourly(
                                    "marketplace",
                                    "kefu_aftersales_review_replies_overdue_total",
                                    sel,
                                ),
                                "{{marketplace}}",
                            )
                        ],
                        width=8,
                    ),
                ],
            ),
            *service_rows("aftersales"),
        ],
    )


def feedback() -> Dashboard:
    sel = 'instance=~"$instance"'
    return Dashboard(
        uid="kefu-feedback",
        title="kefu / Feedback",
        description="Satisfaction surveys and KPIs over the rolling window; and the service's "
        "consumers, lag and outbox.",
        variables=[instance_variable("feedback")],
        rows=[
            Row(
                "Surveys",
                [
                    Panel(
                        "Survey steps per hour by kind and outcome",
                        [
                            Q(
                                hourly("kind, outcome", "kefu_feedback_surveys_total", sel),
                                "{{kind}} {{outcome}}",
                            )
                        ],
                    ),
                    Panel(
                        "Low-rating follow-ups per hour by route",
                        [Q(hourly("route", "kefu_feedback_follow_ups_total", sel), "{{route}}")],
                    ),
                    Panel(
                        "Facts taken from other services /s by kind and outcome",
                        [
                            Q(
                                per("kind, outcome", "kefu_feedback_facts_total", sel),
                                "{{kind}} {{outcome}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "KPI gauge refresh failures per hour",
                        [
                            Q(
                                "sum(increase(kefu_feedback_kpi_refresh_failures_total"
                                f"{{{sel}}}[1h]))",
                                "failures",
                            )
                        ],
                        description="The KPI gauges keep their last value while refreshes fail.",
                    ),
                ],
            ),
            Row(
                "KPIs over the rolling window",
                [
                    Panel(
                        "KPI ratios (all channels)",
                        [
                            Q(
                                f'max by (kpi) (kefu_feedback_kpi_ratio{{channel="all", {sel}}})',
                                "{{kpi}}",
                            )
                        ],
                        unit="percentunit",
                        min=0,
                        max=1,
                    ),
                    Panel(
                        "SLA hit ratio by SLA and channel",
                        [
                            Q(
                                f"max by (sla, channel) (kefu_feedback_sla_hit_ratio{{{sel}}})",
                                "{{sla}} {{channel}}",
                            )
                        ],
                        unit="percentunit",
                        min=0,
                        max=1,
                    ),
                    Panel(
                        "Response times (all channels)",
                        [
                            Q(
                                "max by (measure, stat) (kefu_feedback_response_seconds"
                                f'{{channel="all", {sel}}})',
                                "{{measure}} {{stat}}",
                            )
                        ],
                        unit="s",
                    ),
                    Panel(
                        "CSAT by survey dimension",
                        [
                            Q(
                                f"max by (dimension) (kefu_feedback_csat_dimension_ratio{{{sel}}})",
                                "CSAT {{dimension}}",
                            ),
                        ],
                        unit="percentunit",
                        min=0,
                        max=1,
                    ),
                ],
            ),
            *service_rows("feedback"),
        ],
    )


def business() -> Dashboard:
    return Dashboard(
        uid="kefu-business",
        title="kefu / Business",
        description="For the customer-service lead: volume by channel, SLA, first response, "
        "CSAT, conversion, lost orders, after-sales decisions, notifications.",
        time_from="now-24h",
        rows=[
            Row(
                "Volume",
                [
                    Panel(
                        "Inquiries opened per hour by channel",
                        [
                            Q(
                                hourly(
                                    "channel", "kefu_inquiry_messages_total", 'outcome="opened"'
                                ),
                                "{{channel}}",
                            )
                        ],
                        stack=True,
                    ),
                    Panel(
                        "Inquiries opened in range by channel",
                        [
                            Q(
                                in_range(
                                    "channel", "kefu_inquiry_messages_total", 'outcome="opened"'
                                ),
                                "{{channel}}",
                                instant=True,
                            )
                        ],
                        kind="bargauge",
                        decimals=0,
                        width=6,
                    ),
                    Panel(
                        "Inquiries in range by category",
                        [
                            Q(
                                in_range("category", "kefu_inquiry_classified_total"),
                                "{{category}}",
                                instant=True,
                            )
                        ],
                        kind="bargauge",
                        decimals=0,
                        width=6,
                    ),
                    Panel(
                        "Share answered by the bot, by channel",
                        [
                            Q(
                                "sum by (channel) (increase(kefu_inquiry_auto_answered_total[1h]))"
                                "\n  / sum by (channel) (increase(kefu_inquiry_messages_total"
                                '{outcome="opened"}[1h]))',
                                "{{channel}}",
                            )
                        ],
                        unit="percentunit",
                        min=0,
                        max=1,
                    ),
                    Panel(
                        "Customer messages per hour by outcome",
                        [
                            Q(hourly("outcome", "kefu_inquiry_messages_total"), "{{outcome}}"),
                        ],
                        stack=True,
                    ),
                ],
            ),
            Row(
                "SLA and response times",
                [
                    Panel(
                        "SLA warnings and breaches per hour by channel",
                        [
                            Q(
                                hourly("channel, alarm", "kefu_inquiry_sla_alarms_total"),
                                "{{alarm}} {{channel}}",
                            )
                        ],
                    ),
                    Panel(
                        "SLA hit ratio by SLA (all channels)",
                        [
                            Q(
                                'max by (sla) (kefu_feedback_sla_hit_ratio{channel="all"})',
                                "{{sla}}",
                            )
                        ],
                        unit="percentunit",
                        min=0,
                        max=1,
                    ),
                    Panel(
                        "First response time p50 / p90 (all channels)",
                        [
                            Q(
                                "max by (stat) (kefu_feedback_response_seconds"
                                '{measure="first_response", stat=~"p50|p90", channel="all"})',
                                "{{stat}}",
                            )
                        ],
                        unit="s",
                    ),
                    Panel(
                        "First response time p90 by channel",
                        [
                            Q(
                                "max by (channel) (kefu_feedback_response_seconds"
                                '{measure="first_response", stat="p90", channel!="all"})',
                                "{{channel}}",
                            )
                        ],
                        unit="s",
                    ),
                ],
            ),
            Row(
                "Satisfaction and sales",
                [
                    Panel(
                        "CSAT (share of 4-5 ratings)",
                        [
                            Q('max(kefu_feedback_kpi_ratio{kpi="csat", channel="all"})', "CSAT"),
                        ],
                        kind="stat",
                        unit="percentunit",
                        thresholds=[("red", None), ("orange", 0.8), ("green", 0.9)],
                        width=6,
                        height=6,
                    ),
                    Panel(
                        "Conversion (consultations that led to an order)",
                        [
                            Q(
                                'max(kefu_feedback_kpi_ratio{kpi="conversion", channel="all"})',
                                "conversion",
                            )
                        ],
                        kind="stat",
                        unit="percentunit",
                        width=6,
                        height=6,
                    ),
                    Panel(
                        "Orders lost (rolling window)",
                        [Q("max(kefu_feedback_lost_orders)", "orders lost")],
                        kind="stat",
                        thresholds=ZERO_IS_GOOD,
                        decimals=0,
                        width=6,
                        height=6,
                    ),
                    Panel(
                        "Survey response rate",
                        [
                            Q(
                                "max(kefu_feedback_kpi_ratio"
                                '{kpi="survey_response", channel="all"})',
                                "responses / surveys sent",
                            )
                        ],
                        kind="stat",
                        unit="percentunit",
                        width=6,
                        height=6,
                    ),
                    Panel(
                        "CSAT, conversion, first-contact resolution by channel",
                        [
                            Q(
                                "max by (kpi, channel) (kefu_feedback_kpi_ratio{"
                                'kpi=~"csat|conversion|first_contact_resolution", channel!="all"})',
                                "{{kpi}} {{channel}}",
                            )
                        ],
                        unit="percentunit",
                        min=0,
                        max=1,
                    ),
                    Panel(
                        "Unpaid orders: reminders and orders lost per hour",
                        [
                            Q(
                                hourly(
                                    "step",
                                    "kefu_orders_follow_up_total",
                                    'step=~".+_reminder|lost|loss_recovered"',
                                ),
                                "{{step}}",
                            ),
                            Q(
                                hourly(
                                    "status",
                                    "kefu_notifications_total",
                                    'purpose="payment_reminder", status=~"sent|failed"',
                                ),
                                "reminder notifications {{status}}",
                            ),
                        ],
                    ),
                    Panel(
                        "Orders credited to agents per hour (conversion)",
                        [
                            Q(
                                hourly("rule", "kefu_orders_attributions_total", 'credited="true"'),
                                "{{rule}}",
                            )
                        ],
                        stack=True,
                    ),
                ],
            ),
            Row(
                "After-sales and notifications",
                [
                    Panel(
                        "After-sales decisions per hour by verdict",
                        [
                            Q(
                                hourly("verdict", "kefu_aftersales_decisions_total"),
                                "{{verdict}}",
                            )
                        ],
                        stack=True,
                        width=8,
                    ),
                    Panel(
                        "Refunded per day by currency",
                        [
                            Q(
                                "sum by (currency) (increase(kefu_aftersales_refunded_cents_total"
                                "[1d])) / 100",
                                "{{currency}}",
                            )
                        ],
                        width=8,
                    ),
                    Panel(
                        "Notifications per hour: sent, failed, deferred",
                        [
                            Q(
                                hourly(
                                    "status",
                                    "kefu_notifications_total",
                                    'status=~"sent|failed|deferred"',
                                ),
                                "{{status}}",
                            )
                        ],
                        stack=True,
                        width=8,
                    ),
                ],
            ),
        ],
    )


DASHBOARDS = (overview, business, inquiry, notifier, orders, aftersales, feedback)


def generate() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    out = {}
    for build in DASHBOARDS:
        dashboard = build()
        out[f"{dashboard.uid}.json"] = (
            json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n"
        )
    return out


def queries(dashboard_json: dict[str, Any]) -> Iterable[str]:
    """Every PromQL expression of a rendered dashboard (panels, rows' panels, variables)."""
    for panel in dashboard_json.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield target["expr"]
    for var in dashboard_json.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            yield var["query"]["query"] if isinstance(var["query"], dict) else var["query"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is stale")
    args = parser.parse_args(argv)
    files = generate()
    stale = [
        name
        for name, text in files.items()
        if not (OUT_DIR / name).exists() or (OUT_DIR / name).read_text("utf-8") != text
    ]
    extra = sorted(p.name for p in OUT_DIR.glob("*.json") if p.name not in files)
    if args.check:
        for name in stale:
            print(f"stale: {OUT_DIR / name}", file=sys.stderr)
        for name in extra:
            print(f"not generated here: {OUT_DIR / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT_DIR / name).write_text(text, encoding="utf-8")
    for name in extra:
        (OUT_DIR / name).unlink()
    print(f"wrote {len(files)} dashboards to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
