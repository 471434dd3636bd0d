"""deploy/observability without running services: the Prometheus config and alert rules pass
promtool (syntax and unit tests), every alert has a tested firing case and a runbook, and the
Grafana dashboards are valid, provisioned and what their generator writes."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
from observability_kit import (
    DASHBOARDS_DIR,
    GRAFANA_DIR,
    OBSERVABILITY,
    PROMETHEUS_CONFIG,
    RULE_TESTS_DIR,
    RULES_DIR,
    RUNBOOKS_DIR,
    iter_rule_exprs,
    metric_names,
)

RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
RULE_TEST_FILES = sorted(RULE_TESTS_DIR.glob("*.yml"))


def alerts() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in RULE_FILES:
        for name, expr in iter_rule_exprs(path.read_text("utf-8")):
            assert name not in found, f"alert {name} defined twice"
            found[name] = expr
    return found


def run(*args: str, cwd: Any = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)


# --- Prometheus -------------------------------------------------------------------------------


def test_promtool_accepts_the_scrape_config_and_the_rule_files_it_loads(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_check_rules_passes(promtool: str) -> None:
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    result = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_test_rules_passes(promtool: str) -> None:
    assert RULE_TEST_FILES, f"no promtool unit tests in {RULE_TESTS_DIR}"
    result = run(promtool, "test", "rules", *(p.name for p in RULE_TEST_FILES), cwd=RULE_TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_issues_alerts_exist() -> None:
    names = set(alerts())
    wanted = {
        "consumer lag growing": "KefuConsumerLagGrowing",
        "DLQ growth": "KefuDeadLettersGrowing",
        "outbox backlog age": "KefuOutboxBacklogOld",
        "SLA breach rate": "KefuSlaBreachRateHigh",
        "error rate": "KefuConsumerErrorRateHigh",
        "service down": "KefuServiceDown",
    }
    missing = {what: name for what, name in wanted.items() if name not in names}
    assert not missing, missing


def test_every_alert_has_a_unit_test_in_which_it_fires() -> None:
    tests = "\n".join(p.read_text("utf-8") for p in RULE_TEST_FILES)
    # alertname: X followed (before the next alertname) by a non-empty exp_alerts list.
    firing = set()
    for block in re.split(r"\n\s*- eval_time:", tests):
        m = re.search(r"alertname:\s*(\S+)", block)
        if m and re.search(r"exp_alerts:\s*\n\s*- exp_labels:", block):
            firing.add(m.group(1))
    untested = set(alerts()) - firing
    assert not untested, f"alerts without a firing case in {RULE_TESTS_DIR}: {sorted(untested)}"


def test_every_alert_has_severity_summary_description_and_its_runbook() -> None:
    text = "\n".join(p.read_text("utf-8") for p in RULE_FILES)
    blocks = re.split(r"\n\s*- alert:\s*", text)[1:]
    assert len(blocks) == len(alerts())
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"severity:\s*(critical|warning)\b", block), name
        assert "summary:" in block, name
        assert "description:" in block, name
        url = re.search(r"runbook_url:\s*(\S+)", block)
        assert url, f"{name} has no runbook_url"
        assert url.group(1) == f"deploy/observability/runbooks/{name}.md", name
        assert (OBSERVABILITY.parents[1] / url.group(1)).is_file(), f"{url.group(1)} missing"


def test_each_runbook_says_what_it_means_what_to_check_and_how_to_fix() -> None:
    names = set(alerts())
    pages = {p.stem for p in RUNBOOKS_DIR.glob("*.md") if p.name != "README.md"}
    assert pages == names, (
        f"runbooks without alert: {pages - names}; alerts without runbook: {names - pages}"
    )
    index = (RUNBOOKS_DIR / "README.md").read_text("utf-8")
    for name in names:
        text = (RUNBOOKS_DIR / f"{name}.md").read_text("utf-8")
        assert text.startswith(f"# {name}\n"), name
        for section in ("## What it means", "## What to check", "## How to fix"):
            assert section in text, f"{name}.md lacks {section!r}"
        assert f"[{name}.md]({name}.md)" in index, f"runbooks/README.md does not list {name}"


# --- Grafana ----------------------------------------------------------------------------------


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kefu_dashboards", GRAFANA_DIR / "dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text("utf-8")) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def test_the_committed_dashboards_are_what_the_generator_writes() -> None:
    generated = load_generator().generate()
    committed = {p.name: p.read_text("utf-8") for p in DASHBOARDS_DIR.glob("*.json")}
    assert sorted(committed) == sorted(generated)
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert not stale, (
        f"{stale} are stale: run `uv run python deploy/observability/grafana/dashboards.py`"
    )


def test_there_is_an_overview_a_business_and_one_dashboard_per_service() -> None:
    uids = {d["uid"] for d in dashboards().values()}
    services = {"inquiry", "notifier", "orders", "aftersales", "feedback"}
    assert uids == {"kefu-overview", "kefu-business"} | {f"kefu-{s}" for s in services}


def test_dashboards_are_valid_grafana_json() -> None:
    titles = set()
    for name, board in dashboards().items():
        assert 0 < len(board["uid"]) <= 40, name
        assert board["title"] not in titles, f"{name}: duplicate title"
        titles.add(board["title"])
        assert board["schemaVersion"] >= 36, name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = []
        for panel in board["panels"]:
            for inner in [panel, *panel.get("panels", [])]:
                ids.append(inner["id"])
                grid = inner["gridPos"]
                assert grid["x"] >= 0, (name, inner["title"])
                assert grid["x"] + grid["w"] <= 24, (name, inner["title"])
                assert grid["h"] > 0, (name, inner["title"])
                if inner["type"] == "row":
                    continue
                assert inner["type"] in {"timeseries", "stat", "bargauge"}, inner["type"]
                assert inner["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
                assert inner["targets"], (name, inner["title"])
                ref_ids = [t["refId"] for t in inner["targets"]]
                assert len(ref_ids) == len(set(ref_ids)), (name, inner["title"])
                for target in inner["targets"]:
                    assert target["expr"].strip(), (name, inner["title"])
                    assert metric_names(target["expr"]), (name, inner["title"], target["expr"])
                    for var in re.findall(r"\$(\w+)", target["expr"]):
                        assert var.startswith("__") or var in variables or var.isdigit(), (
                            f"{name} {inner['title']}: unknown variable ${var}"
                        )
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards() -> None:
    datasource = (GRAFANA_DIR / "provisioning" / "datasources" / "kefu.yml").read_text("utf-8")
    provider = (GRAFANA_DIR / "provisioning" / "dashboards" / "kefu.yml").read_text("utf-8")
    assert "apiVersion: 1" in datasource
    assert "apiVersion: 1" in provider
    assert "type: prometheus" in datasource
    assert re.search(r"url: http://\S+:9090", datasource)
    assert "type: file" in provider
    assert re.search(r"path: /\S+", provider), "the file provider needs an absolute path"


# --- the PromQL reader the live tests rely on -------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('up{job=~"kefu-.+"} == 0', {"up"}),
        (
            "sum by (service) (rate(kefu_dead_letters_total[5m]))\n  / on (service)\n"
            "sum by (service) (label_replace(rate(faststream_received_messages_total[5m]), "
            '"service", "$1", "app_name", "kefu-(.+)"))',
            {"kefu_dead_letters_total", "faststream_received_messages_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (app_name, le) (rate("
            "faststream_received_processed_messages_duration_seconds_bucket[$__rate_interval])))",
            {"faststream_received_processed_messages_duration_seconds_bucket"},
        ),
        (
            "x_total unless x_total offset 10m and on (a, b) group_left (c) y > bool 3",
            {"x_total", "y"},
        ),
        ('label_values(up{job=~"kefu-inquiry(-.+)?"}, instance)', {"up"}),
        ('sum(increase(a_total{instance=~"$instance"}[$__range])) / 100', {"a_total"}),
        ("max(a:b:rate5m) - nan + Inf", {"a:b:rate5m"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
