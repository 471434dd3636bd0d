"""The Compose stack, loaded by compose-go (the loader of `docker compose`): it parses and
validates, its images are pinned or built from a Dockerfile of this repository, every file it
mounts or reads exists, and it has what a whole stack needs."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy_model import COMPOSE_WORKLOADS, DEPLOY, ROOT

from conftest import require_tool

INFRASTRUCTURE = {
    "kafka": "apache/kafka",
    "kafka-topics": "apache/kafka",
    "mongo": "mongo",
    "prometheus": "prom/prometheus",
    "grafana": "grafana/grafana",
    "otel-collector": "otel/opentelemetry-collector",
    "jaeger": "jaegertracing/jaeger",
}


def _kefu_services() -> list[str]:
    return [name for names in COMPOSE_WORKLOADS.values() for name in names]


def test_the_stack_has_every_piece(compose_project: dict[str, Any]) -> None:
    services = compose_project["services"]
    assert set(INFRASTRUCTURE) | set(_kefu_services()) <= set(services)
    for name, image in INFRASTRUCTURE.items():
        assert services[name]["image"].startswith(f"{image}:"), name
    assert services["mongo"]["image"].startswith("mongo:7"), "MongoDB 7"
    assert "--replSet" in services["mongo"]["command"]


def test_images_are_pinned_or_built_here(compose_project: dict[str, Any]) -> None:
    built: dict[str, Path] = {}
    for name, service in compose_project["services"].items():
        image = service.get("image", "")
        if "build" in service:
            context = Path(service["build"]["context"])
            dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
            assert context.resolve() == ROOT, f"{name}: build from the repository root"
            built[image] = dockerfile
            continue
        if image.startswith("kefu-"):
            continue  # another service builds it (checked below)
        tag = image.rpartition(":")[2]
        assert ":" in image, f"{name}: pin {image} to a version"
        assert re.match(r"v?\d+\.\d+", tag), f"{name}: pin {image} to a version"
    for name, service in compose_project["services"].items():
        image = service.get("image", "")
        if image.startswith("kefu-"):
            assert image in built, f"{name}: {image} is built by no service of the stack"
            assert service.get("pull_policy") in (None, "never", "build", "missing"), name


def test_every_mounted_or_read_file_exists(compose_project: dict[str, Any]) -> None:
    for name, service in compose_project["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']} is missing"
                assert volume.get("read_only"), f"{name}: mount {volume['source']} read-only"
    # compose-go has read the env_files (a missing required one is an error); check the list too.
    compose = DEPLOY / "compose" / "compose.yaml"
    for path in re.findall(
        r"^\s+- (\.\./k8s/base/\w+/config\.env|dev-secrets\.env)$", compose.read_text(), re.M
    ):
        assert (compose.parent / path).is_file(), path


def test_kefu_containers_are_hardened_and_wait_for_their_dependencies(
    compose_project: dict[str, Any],
) -> None:
    services = compose_project["services"]
    for name in _kefu_services():
        service = services[name]
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert any(t.startswith("/tmp") for t in service.get("tmpfs", [])), name
        depends = service["depends_on"]
        assert depends["kafka-topics"]["condition"] == "service_completed_successfully", name
        assert depends["mongo"]["condition"] == "service_healthy", name
        assert service["environment"][f"KEFU_{_svc(name).upper()}_HTTP_HOST"] == "0.0.0.0"
        assert any(p["target"] == 8080 for p in service.get("ports", [])), name
    assert "healthcheck" in services["kafka"]
    assert "healthcheck" in services["mongo"]
    assert services["kafka-topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_kefu_services_use_the_stacks_endpoints(compose_project: dict[str, Any]) -> None:
    services = compose_project["services"]
    for name in _kefu_services():
        env = services[name]["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["MONGODB_URI"].startswith("mongodb://mongo:27017/")
        assert "replicaSet=rs0" in env["MONGODB_URI"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"


def test_host_ports_do_not_collide(compose_project: dict[str, Any]) -> None:
    published = [
        (p.get("host_ip", ""), p["published"])
        for s in compose_project["services"].values()
        for p in s.get("ports", [])
    ]
    assert len(published) == len(set(published)), published


def test_prometheus_scrapes_every_kefu_service(load_yaml: Callable[[Path], Any]) -> None:
    config = load_yaml(DEPLOY / "compose" / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for names in COMPOSE_WORKLOADS.values():
        for name in names:
            job = jobs[f"kefu-{name}"]
            assert job["honor_labels"] is True
            assert job["static_configs"][0]["targets"] == [f"{name}:8080"]
    # The same job names as the local runner's configuration, which the alert rules assume.
    local = load_yaml(DEPLOY / "observability" / "prometheus" / "prometheus.yml")
    assert {j["job_name"] for j in local["scrape_configs"]} <= set(jobs)


def test_promtool_accepts_the_prometheus_configuration() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [
            promtool,
            "check",
            "config",
            "--syntax-only",
            str(DEPLOY / "compose" / "prometheus" / "prometheus.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _svc(compose_name: str) -> str:
    return next(s for s, names in COMPOSE_WORKLOADS.items() if compose_name in names)
