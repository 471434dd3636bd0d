"""Monitoring wiring: the Kubernetes PrometheusRule is the current copy of kefu's alert rules,
and the Compose stack's Grafana finds the data source the dashboards ask for."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deploy_model import COMPONENTS, DEPLOY

from conftest import require_tool

RULES = DEPLOY / "observability" / "prometheus" / "rules"
PROMETHEUS_RULE = COMPONENTS / "monitoring" / "prometheusrule.yaml"


def test_prometheusrule_is_the_current_copy_of_the_alert_rules(
    load_yaml: Callable[[Path], Any],
) -> None:
    groups: list[Any] = []
    for path in sorted(RULES.glob("*.yml")):
        groups += load_yaml(path)["groups"]
    assert groups, f"no alert rules in {RULES}"
    copy = load_yaml(PROMETHEUS_RULE)
    assert copy["kind"] == "PrometheusRule"
    assert copy["spec"]["groups"] == groups, (
        f"{PROMETHEUS_RULE.relative_to(DEPLOY.parent)} is stale: run "
        "`uv run --with pyyaml python deploy/k8s/components/monitoring/render_prometheusrule.py`"
    )


def test_promtool_accepts_the_rules_in_the_prometheusrule(
    tmp_path: Path, load_yaml: Callable[[Path], Any]
) -> None:
    promtool = require_tool("promtool")
    rule = load_yaml(PROMETHEUS_RULE)
    rules_file = tmp_path / "kefu.rules.yml"
    rules_file.write_text(json.dumps({"groups": rule["spec"]["groups"]}))  # JSON is YAML
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_grafana_provides_the_dashboards_data_sources(
    load_yaml: Callable[[Path], Any],
) -> None:
    datasources = load_yaml(DEPLOY / "compose" / "grafana" / "datasources.yml")
    provided = {(d["type"], d["uid"]) for d in datasources["datasources"]}
    local = DEPLOY / "observability" / "grafana" / "provisioning" / "datasources"
    for path in local.glob("*.yml"):
        for source in load_yaml(path)["datasources"]:
            assert (source["type"], source["uid"]) in provided, source["uid"]
    dashboards = sorted((DEPLOY / "observability" / "grafana" / "dashboards").glob("*.json"))
    if not dashboards:
        pytest.skip("no dashboards in deploy/observability yet")
    home = "kefu-overview.json"
    assert home in {d.name for d in dashboards}, "the Compose Grafana opens kefu-overview"
    for dashboard in dashboards:
        text = dashboard.read_text()
        json.loads(text)
        for uid in {u for u in _uids(text)} - {"${datasource}", "-- Grafana --", "grafana"}:
            assert any(uid == p[1] for p in provided), (
                f"{dashboard.name} asks for data source {uid}"
            )


def _uids(text: str) -> set[str]:
    data = json.loads(text)
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict) and isinstance(source.get("uid"), str):
                found.add(source["uid"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return found
