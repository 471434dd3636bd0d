"""Schemathesis against a running service, and what its OpenAPI document says about limits.

Schemathesis runs as its CLI (``st``) in a process of its own: the one in the project's
environment when it is installed there (``uv pip install schemathesis``; the lead adds it to
the dev group), else ``uv tool run --from schemathesis==<version> st`` from uv's cache, which
a ``uv sync`` of the workspace cannot remove.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fleet import Fleet

SCHEMATHESIS_VERSION = "4.32.5"
CHECKS = "not_a_server_error,response_schema_conformance"


def schemathesis_command() -> list[str]:
    local = Path(sys.executable).parent / "st"
    if local.exists():
        return [str(local)]
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("neither schemathesis (st) nor uv is installed")
    return [uv, "tool", "run", "--from", f"schemathesis=={SCHEMATHESIS_VERSION}", "st"]


@dataclass(frozen=True)
class FuzzConfig:
    max_examples: int = 8
    phases: str = "examples,fuzzing"  # the full run adds "coverage" (boundary values)
    seed: int = 13
    request_timeout: float = 20.0


@dataclass
class FuzzResult:
    instance: str
    selected_operations: int = 0
    tested_operations: int = 0
    test_cases: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    output: str = ""

    def summary(self) -> str:
        return (
            f"{self.instance}: {self.tested_operations}/{self.selected_operations} operations, "
            f"{self.test_cases} cases, {len(self.failures)} failures, {len(self.errors)} errors\n"
            + self.output[-6000:]
        )


def run_schemathesis(fleet: Fleet, instance: str, config: FuzzConfig, workdir: Path) -> FuzzResult:
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / f"schemathesis-{instance}.json"
    argv = [
        *schemathesis_command(),
        "run",
        f"{fleet.url(instance)}/openapi.json",
        "--header",
        f"Authorization: {fleet.auth()['Authorization']}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(config.max_examples),
        "--phases",
        config.phases,
        "--seed",
        str(config.seed),
        "--request-timeout",
        str(config.request_timeout),
        "--workers",
        "1",
        "--no-shrink",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    result = FuzzResult(instance, output=proc.stdout + proc.stderr)
    if not report.exists():
        result.errors.append(f"no report (exit {proc.returncode})")
        return result
    data = json.loads(report.read_text())
    result.selected_operations = int(data["operations"]["selected"])
    result.tested_operations = int(data["operations"]["tested"])
    result.test_cases = int(data["test_cases"]["generated"])
    result.failures = list(data.get("failures") or [])
    result.errors = list(data.get("errors") or [])
    return result


# -- page-size caps in the OpenAPI document --


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    maximum: int  # the limit parameter's maximum; 0 when there is none

    @property
    def name(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def capped(self, at_most: int) -> bool:
        return 0 < self.maximum <= at_most


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema if isinstance(schema, dict) else {}


def _unbounded_list_of_objects(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    """An array of objects without maxItems (a bounded one, e.g. a roster, is no page)."""
    schema = _resolve(spec, schema)
    if schema.get("type") != "array" or "maxItems" in schema:
        return False
    items = _resolve(spec, schema.get("items") or {})
    return items.get("type") == "object" or "properties" in items


def collection_operations(spec: dict[str, Any]) -> list[Operation]:
    """GETs of a collection (the path does not end in an id) answering a list of objects,
    bare or in an object's property (``{"items": [...]}``)."""
    out: list[Operation] = []
    for path, ops in spec.get("paths", {}).items():
        op = ops.get("get")
        if op is None or path.rstrip("/").endswith("}"):
            continue
        content = op.get("responses", {}).get("200", {}).get("content", {})
        schema = _resolve(spec, content.get("application/json", {}).get("schema", {}))
        props = schema.get("properties") or {}
        if not (
            _unbounded_list_of_objects(spec, schema)
            or any(_unbounded_list_of_objects(spec, p) for p in props.values())
        ):
            continue
        limit = next(
            (
                p
                for p in op.get("parameters", [])
                if p.get("in") == "query" and p["name"] == "limit"
            ),
            None,
        )
        maximum = int((limit or {}).get("schema", {}).get("maximum") or 0)
        out.append(Operation("get", path, maximum))
    return out
