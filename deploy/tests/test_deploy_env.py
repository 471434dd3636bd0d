"""Every environment variable a service reads (derived from its settings class, so a service or
a setting that lands later is checked without editing this file) is set in Compose and in every
Kubernetes overlay; secrets come from Secrets; no variable is set that nothing reads; and the
values given make the service's settings load."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest
from deploy_model import (
    COMPOSE_WORKLOADS,
    EXTERNAL_SECRETS,
    K8S_WORKLOADS,
    SERVICES,
    container_env,
    env_vars,
    kefu_deployments,
    service_prefix,
)
from kefu_shared.settings import settings_class_of

K8S_VARIANTS = ("dev", "production", "production+components", "production+components+kafka-tls")


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(service: str) -> type[Any]:
    cls = settings_class_of(service)
    if cls is None:
        pytest.skip(f"kefu_{service}.settings has no ServiceSettings subclass yet")
    return cls


def _loads(cls: type[Any], env: dict[str, str | None]) -> None:
    given = {k: v for k, v in env.items() if v is not None}
    with mock.patch.dict(os.environ, given, clear=True):
        cls()


def _unknown(service: str, cls: type[Any], env: dict[str, Any]) -> set[str]:
    read = {v.name for v in env_vars(cls)}
    return {k for k in env if k.startswith(service_prefix(service)) and k not in read}


def test_compose_sets_every_variable_the_service_reads(
    service: str, settings: type[Any], compose_project: dict[str, Any]
) -> None:
    for workload in COMPOSE_WORKLOADS[service]:
        env = compose_project["services"][workload]["environment"]
        missing = [v.name for v in env_vars(settings) if v.name not in env]
        assert not missing, (
            f"Compose service {workload} does not set {missing}: add them to "
            f"deploy/k8s/base/{service}/config.env (or, for per-environment values and secrets, "
            "to deploy/compose/compose.yaml)"
        )
        unknown = _unknown(service, settings, env)
        assert not unknown, f"Compose service {workload} sets {unknown}, which nothing reads"
        _loads(settings, env)


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_kubernetes_sets_every_variable_the_service_reads(
    service: str,
    settings: type[Any],
    rendered: dict[str, list[dict[str, Any]]],
    variant: str,
) -> None:
    docs = rendered[variant]
    deployments = kefu_deployments(docs)
    for workload in K8S_WORKLOADS[service]:
        container = deployments[workload]["spec"]["template"]["spec"]["containers"][0]
        env = container_env(docs, container, EXTERNAL_SECRETS)
        missing = [v.name for v in env_vars(settings) if v.name not in env.values]
        assert not missing, (
            f"{variant}: Deployment {workload} does not set {missing}: add them to "
            f"deploy/k8s/base/{service}/config.env, or as env entries of "
            f"deploy/k8s/base/{service}/deployment.yaml (Secret references for secrets)"
        )
        unknown = _unknown(service, settings, env.values)
        assert not unknown, f"{variant}: Deployment {workload} sets {unknown}, which nothing reads"
        for var in env_vars(settings):
            if var.secret:
                assert env.sources[var.name] == "secret", (
                    f"{variant}: {workload} takes {var.name} from a {env.sources[var.name]}, "
                    "not a Secret"
                )
        if variant == "dev":  # every value is known: the settings must load from them
            _loads(settings, env.values)


def test_secrets_are_not_in_the_shared_config_files(service: str, settings: type[Any]) -> None:
    from deploy_model import DEPLOY

    config = (DEPLOY / "k8s" / "base" / service / "config.env").read_text()
    names = {
        line.split("=", 1)[0]
        for line in config.splitlines()
        if "=" in line and not line.startswith("#")
    }
    leaked = {v.name for v in env_vars(settings) if v.secret} & names
    assert not leaked, f"config.env is a ConfigMap; move {leaked} to a Secret"
