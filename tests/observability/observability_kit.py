"""Helpers of the observability tests: PromQL and exposition parsing, a local OTLP/HTTP
receiver, a real Prometheus process, and the paths of deploy/observability."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS_DIR = OBSERVABILITY / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
GRAFANA_DIR = OBSERVABILITY / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
RUNBOOKS_DIR = OBSERVABILITY / "runbooks"

INSTALL_HINT = (
    "is not on PATH: install Debian's Prometheus package (`apt-get install prometheus`, which "
    "ships both `prometheus` and `promtool`); `./kefu` installs it when it runs as root"
)


def require_tool(name: str) -> str:
    """The path of a Prometheus tool, or a test failure that says how to get it."""
    import pytest

    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` {INSTALL_HINT}", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- PromQL ----------------------------------------------------------------------------------

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${__range}": "1h",
    "$instance": ".*",
    "${instance}": ".*",
}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.S)


def grafana_to_promql(expr: str) -> str:
    """A Grafana query as Prometheus runs it: the dashboard variables substituted."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values query) selects."""
    match = _LABEL_VALUES.match(expr)
    if match:
        expr = match.group(1)
    expr = grafana_to_promql(expr)
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)  # ranges and subqueries
    previous = None
    while previous != expr:  # nested groupings
        previous = expr
        expr = _GROUPING.sub(" ", expr)
    names = set()
    for m in _IDENT.finditer(expr):
        token = m.group(0)
        rest = expr[m.end() :].lstrip()
        if token.lower() in _KEYWORDS or rest.startswith("("):
            continue
        names.add(token)
    return names


# --- the exposition format ------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def exposed_names(text: str) -> set[str]:
    """Every series name a /metrics page declares or has samples of (with the suffixes of
    counters and histograms), so ``rate(x_total)`` and ``x_bucket`` are found."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter":
                names.add(name.removesuffix("_total") + "_total")
            elif kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            elif kind == "summary":
                names.update({f"{name}_sum", f"{name}_count"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def samples(text: str) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


# --- OTLP/HTTP receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]


@dataclass
class OtlpReceiver:
    """Accepts OTLP/HTTP protobuf trace exports on 127.0.0.1 (what the services' exporter sends
    to ``$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces``) and keeps the spans in memory."""

    port: int = 0
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the exporter's only request
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._accept(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _accept(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ReceivedSpan(
                            service=service,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            kind=span.kind,
                            attributes=_attributes(span.attributes),
                        )
                    )
        with self._lock:
            self.spans.extend(found)
            self.requests += 1

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def services_in(self, trace_id: str) -> dict[str, list[ReceivedSpan]]:
        by_service: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in self.trace(trace_id):
            by_service[span.service].append(span)
        return dict(by_service)


def _attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def is_store_call(span: ReceivedSpan) -> bool:
    return (
        span.attributes.get("db.system") == "mongodb"
        or span.attributes.get("db.system.name") == "mongodb"
    )


# --- a real Prometheus ------------------------------------------------------------------------


def prometheus_config_for_test(
    ports: dict[int, int], *, interval: str = "1s", extra_jobs: dict[str, int] | None = None
) -> str:
    """deploy/observability/prometheus/prometheus.yml for a test run: each local runner port
    replaced by the port of the test's instance, 1 s scrape and evaluation intervals.

    Fails loudly when the committed file no longer has the shape this relies on.
    """
    text = PROMETHEUS_CONFIG.read_text("utf-8")
    for key in ("scrape_interval: 15s", "evaluation_interval: 15s", "scrape_timeout: 10s"):
        assert key in text, f"{PROMETHEUS_CONFIG} no longer has {key!r}"
    text = text.replace("scrape_interval: 15s", f"scrape_interval: {interval}")
    text = text.replace("evaluation_interval: 15s", f"evaluation_interval: {interval}")
    text = text.replace("scrape_timeout: 10s", f"scrape_timeout: {interval}")
    for local, test in ports.items():
        target = f'"127.0.0.1:{local}"'
        assert target in text, f"{PROMETHEUS_CONFIG} has no target {target}"
        text = text.replace(target, f'"127.0.0.1:{test}"')
    for job, port in (extra_jobs or {}).items():
        text += (
            f"  - job_name: {job}\n    honor_labels: true\n    static_configs:\n"
            f'      - targets: ["127.0.0.1:{port}"]\n'
        )
    return text


class Prometheus:
    """``prometheus`` from Debian's package, on 127.0.0.1, with its data in a temporary dir."""

    def __init__(self, binary: str, workdir: Path, config_text: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(RULES_DIR, workdir / "rules", dirs_exist_ok=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(config_text, encoding="utf-8")
        self.log = workdir / "prometheus.log"
        self._binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Prometheus:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    self._binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--web.enable-lifecycle",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            raise PromQLError(body.get("error", str(exc))) from exc
        if body.get("status") != "success":
            raise PromQLError(body.get("error", str(body)))
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result = data["result"]
        return result if isinstance(result, list) else [result]

    def series(self, match: str) -> list[dict[str, str]]:
        now = time.time()
        return list(self.api("series", **{"match[]": match, "start": str(now - 3600)}))


class PromQLError(Exception):
    pass


def wait_until(
    check: Callable[[], Any], *, timeout: float, interval: float = 0.5, what: str = ""
) -> Any:
    """Call ``check`` until it returns something truthy; fail with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {last!r}")
        time.sleep(interval)


def wait_until_none_missing(
    missing: Callable[[], Collection[Any]], *, timeout: float, what: str
) -> None:
    """Call ``missing`` until it returns nothing; fail naming what was still missing."""
    deadline = time.monotonic() + timeout
    while True:
        left = missing()
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout:.0f}s still missing {what}: {sorted(left)}")
        time.sleep(0.5)


def iter_rule_exprs(rules_text: str) -> Iterator[tuple[str, str]]:
    """(alert name, expression) of every alert in a rule file, without a YAML parser: the
    files keep ``- alert:`` then ``expr:`` (one line, or a ``|-`` block)."""
    lines = rules_text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"\s*- alert:\s*(\S+)", lines[i])
        if not m:
            i += 1
            continue
        name = m.group(1)
        i += 1
        while not re.match(r"\s*expr:", lines[i]):
            i += 1
        head = lines[i].split("expr:", 1)[1].strip()
        if head in ("|", "|-", ">", ">-"):
            indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
            body = []
            i += 1
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) >= indent
            ):
                body.append(lines[i][indent:])
                i += 1
            yield name, "\n".join(body).strip()
        else:
            yield name, head
            i += 1
