"""Monitoring wiring: the Kubernetes PrometheusRule is the current copy of kefu's alert rules,
and the Compose stack's Grafana finds the data source the dashboards ask for."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_model import COMPONENTS, DEPLOY

from conftest import require_tool

RENDER = COMPONENTS / "monitoring" / "render_prometheusrule.py"


def _render_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("render_prometheusrule", RENDER)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_the_current_copy_of_the_alert_rules() -> None:
    module = _render_module()
    current = (COMPONENTS / "monitoring" / "prometheusrule.yaml").read_text()
    assert current == module.render(), (
        "deploy/k8s/components/monitoring/prometheusrule.yaml is stale: run "
        "`uv run python deploy/k8s/components/monitoring/render_prometheusrule.py`"
    )
    assert yaml.safe_load(current)["spec"]["groups"], "no rules"


def test_promtool_accepts_the_rules_in_the_prometheusrule(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rule = yaml.safe_load((COMPONENTS / "monitoring" / "prometheusrule.yaml").read_text())
    rules_file = tmp_path / "kefu.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_grafana_provides_the_dashboards_data_sources() -> None:
    datasources = yaml.safe_load((DEPLOY / "compose" / "grafana" / "datasources.yml").read_text())
    provided = {(d["type"], d["uid"]) for d in datasources["datasources"]}
    local = DEPLOY / "observability" / "grafana" / "provisioning" / "datasources"
    for path in local.glob("*.yml"):
        for source in yaml.safe_load(path.read_text())["datasources"]:
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
