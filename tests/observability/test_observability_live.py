"""The running system, observed as an SRE observes it.

Every service that has landed runs as its own process (``python -m kefu_<service>``, as the
local runner and production run it) on the test Kafka and FerretDB, exporting traces over
OTLP/HTTP to a receiver in this test. A real Prometheus (Debian's package) scrapes them every
second with deploy/observability's scrape config and alert rules. After some customer traffic
the tests ask Prometheus for the series the issue names, run every dashboard query on it, check
label cardinality, and follow one customer's journey through the traces and the logs.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from kefu_local.infra import Endpoints
from kefu_local.pytest_plugin import TEST_KEYRING, auth_header
from kefu_local.services import (
    LOCAL_SERVICES,
    ServiceProcesses,
    ServiceSpec,
    available_services,
)
from kefu_shared import topics
from kefu_shared.contracts.inquiry import CustomerMessage
from kefu_shared.envelope import Envelope
from kefu_shared.testing import produce
from observability_kit import (
    DASHBOARDS_DIR,
    RULES_DIR,
    OtlpReceiver,
    Prometheus,
    PromQLError,
    ReceivedSpan,
    exposed_names,
    free_port,
    grafana_to_promql,
    is_store_call,
    iter_rule_exprs,
    metric_names,
    prometheus_config_for_test,
    samples,
    wait_until,
    wait_until_none_missing,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Deadlines for things that take seconds on an idle machine; generous, because the test servers
# are shared and a busy machine slows every step (they only matter when something is wrong).
PATIENCE = 180.0

JOURNEY_TRACE_ID = "5cf0a1e2b3c4d5e6f708192a3b4c5d6e"
JOURNEY_PARENT = "1a2b3c4d5e6f7081"
HTTP_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
BROKEN_TRACE_ID = "7d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a"  # a message that breaks its contract
KB_QUESTION = "请问可以开发票吗？"
GHOST_JOB = "kefu-ghost"  # a target nobody listens on: KefuServiceDown must go pending for it

# Tiny SLA targets so warnings and breaches happen within the test.
FAST_SLA = {
    "warn_ratio": 0.5,
    "default": {"first_response": 2, "next_response": 2, "resolution": 4},
    "channels": {},
    "categories": {},
}


@dataclass
class System:
    token: str
    prefix: str
    instances: dict[str, ServiceSpec]  # instance name -> spec with the test's port
    prometheus: Prometheus
    receiver: OtlpReceiver
    logs_dir: Path
    correlation_id: str
    customers: list[str] = field(default_factory=list)

    @property
    def broken_id(self) -> str:
        return f"broken-obs{self.token}"

    @property
    def services(self) -> set[str]:
        return {spec.service for spec in self.instances.values()}

    def url(self, instance: str) -> str:
        return self.instances[instance].url

    def scrape(self, instance: str) -> str:
        response = httpx.get(f"{self.url(instance)}/metrics", timeout=10)
        response.raise_for_status()
        return response.text

    def exported_names(self) -> set[str]:
        names: set[str] = set()
        for instance in self.instances:
            names |= exposed_names(self.scrape(instance))
        return names


def service_env(service: str, token: str, prefix: str, sla_file: Path) -> dict[str, str]:
    p = f"KEFU_{service.upper()}_"
    env = {
        f"{p}MONGODB_DATABASE": f"t_obs_{token}_{service}",
        f"{p}TOPIC_PREFIX": prefix,
        f"{p}CONSUMER_GROUP": f"tobs{token}-{service}",
        f"{p}LAG_INTERVAL_SECONDS": "1",
        f"{p}OUTBOX_POLL_SECONDS": "0.2",
        f"{p}RETRY_ATTEMPTS": "2",
        f"{p}RETRY_INITIAL_BACKOFF_SECONDS": "0.05",
        f"{p}RETRY_MAX_BACKOFF_SECONDS": "0.2",
        f"{p}LOG_LEVEL": "INFO",
    }
    extra = {
        "inquiry": {"SLA_FILE": str(sla_file), "SLA_SCAN_SECONDS": "0.5"},
        "notifier": {
            "DISPATCH_POLL_SECONDS": "0.2",
            "QUIET_HOURS_CHANNELS": "[]",
            "WEBHOOK_DISPATCH_POLL_SECONDS": "0.2",
        },
        "feedback": {"GAUGE_REFRESH_SECONDS": "1", "QUARTERLY_ROUND_SAMPLE_SIZE": "0"},
        "orders": {"TIMER_SCAN_SECONDS": "0.5"},
    }.get(service, {})
    return {**env, **{p + k: v for k, v in extra.items()}}


def customer_message(
    token: str, n: int, channel: str, content: str, correlation_id: str = ""
) -> tuple[str, Envelope[Any]]:
    customer = f"cust-obs{token}-{n}"
    message = CustomerMessage(
        message_id=f"m-obs{token}-{n}",
        channel=channel,
        customer_id=customer,
        customer_name="Li Lei",
        contact={"email": f"{customer}@example.com", "phone": "13812345678"},
        content=content,
        language="zh",
        sent_at=datetime.now(UTC),
    )
    return customer, Envelope.wrap(
        message, source=f"channel-{channel}", correlation_id=correlation_id or None
    )


def commerce_order(token: str) -> bytes:
    from kefu_shared.contracts.orders import CommerceOrderEvent

    body = {
        "kind": "placed",
        "order_id": f"O-obs{token}",
        "customer_id": f"cust-obs{token}-order",
        "customer_name": "Wang Fang",
        "channel": "web",
        "language": "zh-CN",
        "contact": {"email": "wang.fang@example.com", "phone": "13812345678"},
        "lines": [
            {
                "sku": "JZ-1983",
                "name": "1983",
                "category": "liquor",
                "quantity": 2,
                "unit_price_cents": 19800,
                "catalogue_unit_price_cents": 19800,
            }
        ],
        "total_cents": 39600,
        "address": {
            "province": "浙江省",
            "city": "杭州市",
            "district": "西湖区",
            "street": "文三路 90 号 3 幢 501",
            "receiver": "王芳",
            "phone": "13812345678",
        },
        "placed_at": datetime.now(UTC).isoformat(),
    }
    event = CommerceOrderEvent.model_validate(body)
    return Envelope.wrap(event, source="commerce-platform").kafka_body()


async def push_traffic(system: System, bootstrap: str) -> None:
    """Customer messages on every channel (one answered by the bot, inside a known trace), one
    that breaks its contract, and an order if the orders service runs."""
    inbound = {c.value: system.prefix + topics.inbound_channel_topic(c) for c in topics.Channel}
    customer, journey = customer_message(
        system.token, 0, "chat", KB_QUESTION, correlation_id=system.correlation_id
    )
    system.customers.append(customer)
    await produce(
        bootstrap,
        inbound["chat"],
        [journey.kafka_body()],
        key=customer.encode(),
        headers={
            **journey.kafka_headers(),
            "traceparent": f"00-{JOURNEY_TRACE_ID}-{JOURNEY_PARENT}-01",
        },
    )
    questions = [
        ("chat", "我的订单什么时候发货？"),
        ("chat", "收到的酒瓶碎了，我要投诉"),
        ("email", "Where is my parcel? It has been a week."),
        ("phone", "客户来电询问退货流程"),
        ("social", "你们的新品什么时候上架"),
        ("marketplace", "这个商品有优惠券吗"),
    ]
    for n, (channel, text) in enumerate(questions, start=1):
        customer, envelope = customer_message(system.token, n, channel, text)
        system.customers.append(customer)
        await produce(
            bootstrap,
            inbound[channel],
            [envelope.kafka_body()],
            key=customer.encode(),
            headers=envelope.kafka_headers(),
        )
    # Not JSON at all, and an envelope whose data breaks the contract: both to the DLQ.
    await produce(bootstrap, inbound["chat"], [b"\x00not a customer message"], key=b"junk")
    _, broken = customer_message(system.token, 99, "chat", "x", correlation_id=system.broken_id)
    body = json.loads(broken.kafka_body())
    del body["data"]["content"]
    await produce(
        bootstrap,
        inbound["chat"],
        [json.dumps(body).encode()],
        key=b"broken",
        headers={
            **broken.kafka_headers(),
            "traceparent": f"00-{BROKEN_TRACE_ID}-{JOURNEY_PARENT}-01",
        },
    )
    if "orders" in system.services:
        await produce(
            bootstrap,
            system.prefix + topics.COMMERCE_ORDERS,
            [commerce_order(system.token)],
            key=f"O-obs{system.token}".encode(),
        )


@pytest.fixture(scope="module")
def system(infra: Endpoints, prometheus_binary: str) -> Iterator[System]:
    token = uuid.uuid4().hex[:8]
    prefix = f"tobs{token}."
    workdir = Path(tempfile.mkdtemp(prefix=f"kefu-obs-{token}-"))
    sla_file = workdir / "sla.json"
    sla_file.write_text(json.dumps(FAST_SLA), encoding="utf-8")
    receiver = OtlpReceiver().start()

    local_ports: dict[int, int] = {}
    instances: dict[str, ServiceSpec] = {}
    for spec in available_services():
        port = free_port()
        local_ports[spec.port] = port
        env = {**spec.env, **service_env(spec.service, token, prefix, sla_file)}
        instances[spec.instance] = ServiceSpec(spec.instance, spec.service, port, env)
    assert {"inquiry", "notifier"} <= {s.service for s in instances.values()}

    processes = ServiceProcesses(
        infra,
        workdir / "logs",
        {
            "KEFU_AUTH_KEYS": json.dumps(TEST_KEYRING.keys),
            "KEFU_AUTH_SIGNING_KEY": TEST_KEYRING.signing_kid,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    # Jobs of services that have not landed yet point at a closed port (they are down).
    for spec in LOCAL_SERVICES:
        local_ports.setdefault(spec.port, free_port())
    config = prometheus_config_for_test(local_ports, extra_jobs={GHOST_JOB: free_port()})
    prometheus = Prometheus(prometheus_binary, workdir / "prometheus", config)
    system = System(
        token=token,
        prefix=prefix,
        instances=instances,
        prometheus=prometheus,
        receiver=receiver,
        logs_dir=workdir / "logs",
        correlation_id=f"journey-obs{token}",
    )
    try:
        processes.start(tuple(instances.values()))
        processes.wait_ready(timeout=300)
        prometheus.start()
        # Both inquiry instances answer from the same knowledge base (one database).
        inquiry = next(name for name, s in instances.items() if s.service == "inquiry")
        article = {
            "question": "如何开发票？",
            "answer": "在订单详情页点击“申请发票”，电子发票24小时内发到邮箱。",
            "keywords": ["发票"],
            "language": "zh",
            "category": "order",
        }
        response = httpx.post(
            f"{system.url(inquiry)}/knowledge-base/articles",
            json=article,
            headers={
                **auth_header(),
                "traceparent": f"00-{HTTP_TRACE_ID}-b7ad6b7169203331-01",
            },
            timeout=PATIENCE,
        )
        assert response.status_code == 201, response.text
        asyncio.run(push_traffic(system, infra.kafka_bootstrap))
        yield system
    finally:
        processes.stop()
        prometheus.stop()
        receiver.stop()
        _drop_databases(infra.mongodb_uri, token)
        shutil.rmtree(workdir, ignore_errors=True)


def _drop_databases(mongodb_uri: str, token: str) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        for name in client.list_database_names():
            if name.startswith(f"t_obs_{token}_"):
                client.drop_database(name)
    except Exception:  # cleanup only: the test servers are shared and may be restarting
        pass
    finally:
        client.close()


def present(system: System, expr: str) -> list[dict[str, Any]]:
    try:
        return system.prometheus.query(expr)
    except PromQLError:
        return []


# --- Prometheus finds the series ---------------------------------------------------------------


def test_prometheus_scrapes_every_running_service(system: System) -> None:
    jobs = {f"kefu-{instance}" for instance in system.instances}

    def all_up() -> set[str]:
        up = {r["metric"]["job"] for r in present(system, 'up{job=~"kefu-.+"} == 1')}
        return jobs - up

    wait_until_none_missing(all_up, timeout=PATIENCE, what="jobs up")


def test_prometheus_finds_consumer_red_lag_dead_letter_and_outbox_series(system: System) -> None:
    expected = []
    for service in sorted(system.services):
        app = f'app_name="kefu-{service}"'
        expected += [
            f"faststream_received_messages_total{{{app}}} > 0",
            f"faststream_received_processed_messages_total{{{app}, status='acked'}} > 0",
            f"faststream_received_processed_messages_duration_seconds_bucket{{{app}}}",
            f'kefu_consumer_lag_messages{{service="{service}"}}',
            f'kefu_outbox_backlog_documents{{service="{service}"}}',
            f'kefu_outbox_oldest_age_seconds{{service="{service}"}}',
            f'kefu_outbox_published_total{{service="{service}"}}',
        ]
    expected += [
        'faststream_published_messages_total{app_name="kefu-inquiry", status="success"} > 0',
        'kefu_outbox_published_total{service="inquiry"} > 0',
        'kefu_outbox_published_total{service="notifier"} > 0',
        'kefu_dead_letters_total{service="inquiry"} >= 1',
        'kefu_consumer_lag_messages{service="inquiry", topic=~".*inbound.chat"}',
    ]

    def missing() -> list[str]:
        return [expr for expr in expected if not present(system, expr)]

    wait_until_none_missing(missing, timeout=PATIENCE, what="series")


def test_prometheus_finds_the_business_series(system: System) -> None:
    expected = [
        'kefu_inquiry_messages_total{channel="chat", outcome="opened"} >= 3',
        'kefu_inquiry_messages_total{channel="email", outcome="opened"}',
        "kefu_inquiry_classified_total",
        'kefu_inquiry_auto_answered_total{channel="chat"} >= 1',
        'kefu_inquiry_sla_alarms_total{alarm="warning"}',
        'kefu_inquiry_sla_alarms_total{alarm="breach"}',
        'kefu_notifications_total{status="sent", purpose="bot_answer"} >= 1',
        "kefu_notification_delivery_seconds_bucket",
        'kefu_notification_provider_attempts_total{outcome="ok"}',
    ]
    if "feedback" in system.services:
        expected += [
            "kefu_feedback_facts_total",
            'kefu_feedback_surveys_total{outcome="invited"}',
            'kefu_feedback_kpi_ratio{kpi="csat"}',
            'kefu_feedback_response_seconds{measure="first_response"}',
            "kefu_feedback_lost_orders",
            'kefu_notifications_total{purpose="survey_invitation"}',
        ]
    if "orders" in system.services:
        expected.append('kefu_orders_commerce_events_total{kind="placed"}')

    def missing() -> list[str]:
        return [expr for expr in expected if not present(system, expr)]

    wait_until_none_missing(missing, timeout=PATIENCE, what="series")


def test_every_alert_rule_loads_evaluates_and_service_down_goes_pending(system: System) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = system.prometheus.api("rules")["groups"]
        never = "0001-01-01T00:00:00Z"
        return [r for g in groups for r in g["rules"] if r.get("lastEvaluation", never) != never]

    loaded = wait_until(rules, timeout=PATIENCE, what="evaluated rules")
    names = {r["name"] for r in loaded}
    assert names == {
        name for p in RULES_DIR.glob("*.yml") for name, _ in iter_rule_exprs(p.read_text())
    }
    unhealthy = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert not unhealthy, unhealthy

    def ghost_alert() -> list[dict[str, Any]]:
        return present(
            system,
            f'ALERTS{{alertname="KefuServiceDown", job="{GHOST_JOB}", alertstate="pending"}}',
        )

    wait_until(ghost_alert, timeout=PATIENCE, what="KefuServiceDown pending for the ghost target")
    firing_for_running = present(
        system,
        'ALERTS{alertname="KefuServiceDown", job=~"'
        + "|".join(f"kefu-{i}" for i in system.instances)
        + '"}',
    )
    assert not firing_for_running


# --- dashboards and rules name what the services export -------------------------------------


def dashboard_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        board = json.loads(path.read_text("utf-8"))
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                for target in inner.get("targets", []):
                    found.append((path.name, inner["title"], target["expr"]))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                found.append((path.name, f"variable {var['name']}", var["query"]["query"]))
    return found


def test_every_dashboard_query_names_a_metric_the_services_export(system: System) -> None:
    wait_until(
        lambda: present(system, 'kefu_inquiry_sla_alarms_total{alarm="breach"}'),
        timeout=PATIENCE,
        what="traffic",
    )
    exported = system.exported_names() | {"up"}  # `up` is Prometheus's own per-target series
    unknown = {
        (board, title, name)
        for board, title, expr in dashboard_queries()
        for name in metric_names(expr)
        if name not in exported
    }
    assert not unknown, sorted(unknown)


def test_every_metric_the_services_export_is_on_a_dashboard(system: System) -> None:
    """A new metric without a panel is invisible to the people on call: add it to
    deploy/observability/grafana/dashboards.py."""
    on_dashboards = {name for _, _, expr in dashboard_queries() for name in metric_names(expr)}
    families = set()
    for instance in system.instances:
        for line in system.scrape(instance).splitlines():
            if line.startswith("# TYPE "):
                name = line.split()[2]
                if name.startswith(("kefu_", "faststream_")) and not name.endswith("_created"):
                    families.add(name)
    unused = {
        family
        for family in families
        if not any(n == family or n.startswith(family + "_") for n in on_dashboards)
    }
    assert not unused, sorted(unused)


def test_every_alert_rule_names_a_metric_the_services_export(system: System) -> None:
    exported = system.exported_names() | {"up"}
    unknown = {
        (alert, name)
        for path in RULES_DIR.glob("*.yml")
        for alert, expr in iter_rule_exprs(path.read_text("utf-8"))
        for name in metric_names(expr)
        if name not in exported
    }
    assert not unknown, sorted(unknown)


def test_every_dashboard_query_runs_on_prometheus_and_the_overview_shows_data(
    system: System,
) -> None:
    errors = []
    for board, title, expr in dashboard_queries():
        if title.startswith("variable "):
            match = re.match(r"label_values\((.*),\s*(\w+)\)$", expr.strip(), re.S)
            assert match, expr
            expr = match.group(1)
        try:
            system.prometheus.query(grafana_to_promql(expr))
        except PromQLError as exc:
            errors.append((board, title, str(exc)))
    assert not errors, errors

    overview = {
        title: expr for board, title, expr in dashboard_queries() if board == "kefu-overview.json"
    }
    for title in (
        "Traffic: messages consumed /s",
        "Latency: processing p95",
        "Consumer lag by service, group and topic",
        "Oldest outbox event by service",
        "Instances up by job",
    ):
        expr = grafana_to_promql(overview[title])
        wait_until(partial(present, system, expr), timeout=PATIENCE, what=f"data for {title!r}")


def test_every_metrics_page_follows_prometheus_naming_conventions(
    system: System, promtool: str
) -> None:
    """`promtool check metrics`: counters end in _total, base units, HELP on every metric."""
    wait_until(
        lambda: present(system, 'kefu_inquiry_sla_alarms_total{alarm="breach"}'),
        timeout=PATIENCE,
        what="traffic",
    )
    for instance in system.instances:
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=system.scrape(instance),
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        assert result.returncode == 0, (instance, result.stdout, result.stderr)


# --- label cardinality ------------------------------------------------------------------------

ID_LABELS = {
    "id",
    "customer_id",
    "customer",
    "order_id",
    "order",
    "inquiry_id",
    "case_id",
    "survey_id",
    "delivery_id",
    "message_id",
    "agent_id",
    "user_id",
    "email",
    "phone",
    "trace_id",
    "correlation_id",
    "subscription_id",
}
# Label values that are names of things, not enumerations: topics and consumer groups.
FREE_LABELS = {"handler", "destination", "topic", "group", "le", "quantile"}


def test_labels_are_bounded_enumerations_without_customer_or_order_ids(system: System) -> None:
    wait_until(
        lambda: present(system, 'kefu_inquiry_sla_alarms_total{alarm="breach"}'),
        timeout=PATIENCE,
        what="traffic",
    )
    ids_we_sent = [system.token, *system.customers]
    id_like = re.compile(r"[0-9a-f]{16,}|[0-9a-f]{8}-[0-9a-f]{4}-|^\d{6,}$")
    problems = []
    for instance in system.instances:
        values: dict[tuple[str, str], set[str]] = {}
        series: dict[str, int] = {}
        for sample in samples(system.scrape(instance)):
            series[sample.name] = series.get(sample.name, 0) + 1
            for label, value in sample.labels.items():
                if label in ID_LABELS:
                    problems.append((instance, sample.name, f"label {label}"))
                values.setdefault((sample.name, label), set()).add(value)
                if label in FREE_LABELS:
                    continue
                if id_like.search(value) or any(i in value for i in ids_we_sent):
                    problems.append((instance, sample.name, f"{label}={value}"))
        for (name, label), seen in values.items():
            if label not in FREE_LABELS and len(seen) > 30:
                problems.append((instance, name, f"{len(seen)} values of {label}"))
        for name, count in series.items():
            if count > 300:
                problems.append((instance, name, f"{count} series"))
    assert not problems, problems


# --- one trace per customer journey -------------------------------------------------------------


def journey_services(system: System) -> dict[str, list[ReceivedSpan]]:
    return system.receiver.services_in(JOURNEY_TRACE_ID)


def test_one_trace_follows_the_customer_from_inquiry_to_the_notifier_with_store_calls(
    system: System,
) -> None:
    # inquiry answers with the bot and asks the notifier to send the answer; feedback invites
    # the customer to a survey about it, through the notifier; orders and after-sales read the
    # inquiry's events too (contacts, cases). All of it is one trace.
    must = {f"kefu-{service}" for service in system.services}
    # The services whose state this journey changes: their store calls are in the trace.
    stores = {"kefu-inquiry", "kefu-notifier"} | ({"kefu-feedback"} & must)

    def incomplete() -> set[str]:
        found = journey_services(system)
        left = {f"spans of {service}" for service in must - set(found)}
        left |= {
            f"store calls of {service}"
            for service in stores & set(found)
            if not any(map(is_store_call, found[service]))
        }
        # PRODUCER spans of the notifier: its notification.* events went out in this trace.
        if not any(s.kind == 4 for s in found.get("kefu-notifier", [])):
            left.add("the notifier's published events")
        return left

    wait_until_none_missing(incomplete, timeout=PATIENCE, what="in the journey's trace")
    found = journey_services(system)
    assert len(found) >= 3, f"one trace across {sorted(found)}"
    for service in must:
        assert any(s.kind == 5 for s in found[service]), f"{service}: no CONSUMER span"
    for service in stores:
        assert any(map(is_store_call, found[service])), f"{service}: store calls not traced"
    # The journey started with the channel's message: the inquiry's consumer span is its child.
    assert any(s.parent_id == JOURNEY_PARENT for s in found["kefu-inquiry"])


def test_an_http_request_continues_the_callers_trace_with_its_store_calls(system: System) -> None:
    def spans() -> list[ReceivedSpan]:
        return system.receiver.trace(HTTP_TRACE_ID)

    wait_until(lambda: any(map(is_store_call, spans())), timeout=PATIENCE, what="HTTP trace spans")
    server = [s for s in spans() if s.kind == 2]  # SERVER
    assert [s.name for s in server] == ["POST /knowledge-base/articles"]
    assert {s.service for s in spans()} == {"kefu-inquiry"}
    assert server[0].parent_id == "b7ad6b7169203331"


def log_lines(system: System) -> list[dict[str, Any]]:
    """Every line the services wrote, each parsed as the one JSON object it must be."""
    lines = []
    for path in sorted(system.logs_dir.glob("*.log")):
        for line in path.read_text("utf-8", errors="replace").splitlines():
            if line.strip():
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    raise AssertionError(f"{path.name}: not a JSON log line: {line!r}") from None
    return lines


def test_logs_are_json_with_trace_and_correlation_ids(system: System) -> None:
    # The notifier's delivery of the bot's answer is logged inside the journey's trace.
    journey = wait_until(
        lambda: [e for e in log_lines(system) if e.get("trace_id") == JOURNEY_TRACE_ID],
        timeout=PATIENCE,
        what="log lines with the journey's trace id",
    )
    for entry in journey:
        assert re.fullmatch(r"[0-9a-f]{16}", entry["span_id"])
        assert entry["service"] in system.services
    assert any(e["service"] == "notifier" for e in journey), journey
    # Work done while handling a message carries the message's correlation id as well: the
    # contract-breaking message is dead-lettered with its trace and correlation ids.
    [dead] = wait_until(
        lambda: [e for e in log_lines(system) if e.get("trace_id") == BROKEN_TRACE_ID],
        timeout=PATIENCE,
        what="the dead-letter log line of the broken message",
    )
    assert dead["level"] == "ERROR"
    assert dead["service"] == "inquiry"
    assert dead["correlation_id"] == system.broken_id
    assert "content: Field required" in dead["message"]


def test_without_an_otlp_endpoint_nothing_is_exported() -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT no exporter is installed (no thread, no network)."""
    from kefu_shared.observability import make_tracer_provider

    provider = make_tracer_provider("probe")
    processors = provider._active_span_processor._span_processors
    assert processors == ()
    start = time.perf_counter()
    tracer = provider.get_tracer("probe")
    for _ in range(1000):
        with tracer.start_as_current_span("x"):
            pass
    assert time.perf_counter() - start < 1.0
