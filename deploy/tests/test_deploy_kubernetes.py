"""The Kubernetes manifests: every overlay renders with kustomize, every object validates
against the Kubernetes schemas (kubernetes-validate, strict), and every service and every
inquiry channel group has a hardened Deployment with probes, limits, a Service, a
ServiceAccount, a PodDisruptionBudget and an autoscaler that never outgrows its topics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deploy_model import (
    EXTERNAL_SECRETS,
    K8S_WORKLOADS,
    ROOT,
    container_env,
    kefu_deployments,
    of_kind,
    topics_file,
)
from kefu_shared.topics import Channel, inbound_channel_topic

# The oldest Kubernetes minor still commonly run, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
VARIANTS = ("dev", "production", "production+components", "production+components+kafka-tls")
# production+components holds every object of production and more, and the kafka-tls variant
# changes some of them.
VALIDATED = ("dev", "production+components", "production+components+kafka-tls")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VALIDATED)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], variant: str, version: str
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    errors = []
    for doc in rendered[variant]:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            assert doc.get("spec"), f"{what}: no spec"
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{what}: {exc.message} at {'/'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{what}: {doc['apiVersion']} {doc['kind']} has no schema")
    assert not errors, "\n".join(errors)


def _workloads() -> list[str]:
    return [name for names in K8S_WORKLOADS.values() for name in names]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_and_channel_group_has_its_workload(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    deployments = kefu_deployments(docs)
    assert set(deployments) == set(_workloads())
    for kind in ("Service", "ServiceAccount", "PodDisruptionBudget"):
        assert set(_workloads()) <= set(of_kind(docs, kind)), f"a {kind} is missing"
    autoscaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in of_kind(docs, "HorizontalPodAutoscaler").values()
    }
    autoscaled |= {
        s["spec"]["scaleTargetRef"]["name"] for s in of_kind(docs, "ScaledObject").values()
    }
    assert set(_workloads()) <= autoscaled, f"no autoscaler for {set(_workloads()) - autoscaled}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_selectors_match_their_pods_and_only_them(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    deployments = kefu_deployments(docs)
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}

    def matched(selector: dict[str, str]) -> set[str]:
        return {n for n, labels in pods.items() if selector.items() <= labels.items()}

    for name in _workloads():
        assert matched(deployments[name]["spec"]["selector"]["matchLabels"]) == {name}
        assert matched(of_kind(docs, "Service")[name]["spec"]["selector"]) == {name}
        pdb = of_kind(docs, "PodDisruptionBudget")[name]
        assert matched(pdb["spec"]["selector"]["matchLabels"]) == {name}


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_are_hardened_probed_and_bounded(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    for name, deployment in kefu_deployments(rendered[variant]).items():
        pod = deployment["spec"]["template"]["spec"]
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns replicas"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == name
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/path") == "/metrics"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz", name
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert container[probe]["httpGet"]["port"] in ("http", 8080), name
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{name}: {bound}"
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1], f"{name}: image {image} has no tag"
            if variant != "dev":
                assert not image.endswith((":dev", ":latest")), f"{name}: {image}"
        assert {"name": "tmp", "mountPath": "/tmp"}.items() <= pod["containers"][0]["volumeMounts"][
            0
        ].items()


@pytest.mark.parametrize("variant", VARIANTS)
def test_other_pods_meet_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    for job in of_kind(rendered[variant], "Job").values():
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        # Every ConfigMap key it reads is rendered (raises otherwise).
        container_env(rendered[variant], pod["containers"][0], EXTERNAL_SECRETS)
    for namespace in of_kind(rendered[variant], "Namespace").values():
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def _consumed_topics(workload: str, env: dict[str, str | None]) -> set[str]:
    """The topics a workload consumes: from the service's AsyncAPI document (receive
    operations), narrowed to its channels for an inquiry channel group."""
    service = next(s for s, names in K8S_WORKLOADS.items() if workload in names)
    document = ROOT / "docs" / "asyncapi" / f"{service}.json"
    if not document.exists():
        return set()
    spec = json.loads(document.read_text())
    channels = spec["channels"]
    topics = {
        channels[op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
        for op in spec["operations"].values()
        if op["action"] == "receive"
    }
    if service == "inquiry":
        served = {inbound_channel_topic(c) for c in str(env["KEFU_INQUIRY_CHANNELS"]).split(",")}
        inbound = {inbound_channel_topic(c) for c in Channel}
        topics = (topics - inbound) | (topics & served)
    return topics


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_autoscaler_outgrows_the_partitions_it_consumes(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    partitions = {t.name: t.partitions for t in topics_file().values()}
    deployments = kefu_deployments(docs)
    scalers = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in of_kind(docs, "HorizontalPodAutoscaler").values()
    }
    scalers |= {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"]
        for s in of_kind(docs, "ScaledObject").values()
    }
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = container_env(docs, container, EXTERNAL_SECRETS).values
        topics = _consumed_topics(name, env)
        if not topics:
            continue
        assert topics <= set(partitions), (
            f"{name} consumes topics not in topics.txt: {topics - set(partitions)}"
        )
        most = max(partitions[t] for t in topics)
        assert scalers[name] <= most, (
            f"{name} may scale to {scalers[name]} replicas but its topics have at most {most} "
            "partitions: the extra consumers would idle"
        )


def test_channel_groups_cover_every_channel_once(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for variant in VARIANTS:
        docs = rendered[variant]
        seen: list[str] = []
        for name in K8S_WORKLOADS["inquiry"]:
            container = kefu_deployments(docs)[name]["spec"]["template"]["spec"]["containers"][0]
            env = container_env(docs, container, EXTERNAL_SECRETS).values
            seen += str(env["KEFU_INQUIRY_CHANNELS"]).split(",")
        assert sorted(seen) == sorted(c.value for c in Channel), f"{variant}: {seen}"


def test_keda_triggers_watch_the_groups_and_topics_that_exist(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["production+components"]
    topics = topics_file()
    scaled = of_kind(docs, "ScaledObject")
    assert scaled, "the keda-kafka-lag component renders no ScaledObject"
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in of_kind(docs, "HorizontalPodAutoscaler").values()
    }
    for name, obj in scaled.items():
        assert name not in hpas, f"{name} has both an HPA and a ScaledObject"
        kafka = [t for t in obj["spec"]["triggers"] if t["type"] == "kafka"]
        assert kafka, name
        for trigger in kafka:
            meta = trigger["metadata"]
            assert meta["topic"] in topics, meta["topic"]
            assert meta["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
            if meta["topic"].startswith("kefu.inquiry.inbound."):
                channel = meta["topic"].rsplit(".", 1)[-1]
                assert meta["consumerGroup"] == f"kefu-inquiry-{channel}"
            assert obj["spec"]["maxReplicaCount"] <= topics[meta["topic"]].partitions


def test_monitoring_component_scrapes_every_service(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["production+components"]
    (monitor,) = of_kind(docs, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = of_kind(docs, "Service")
    for name in _workloads():
        assert selector.items() <= services[name]["metadata"]["labels"].items(), name
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    for deployment in kefu_deployments(docs).values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "false", "scraped twice"
    (rule,) = of_kind(docs, "PrometheusRule").values()
    assert rule["spec"]["groups"], "the PrometheusRule carries no alert rules"


def test_production_generates_no_secrets(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not of_kind(rendered["production"], "Secret"), (
        "production Secrets come from the cluster (External Secrets, Sealed Secrets, kubectl)"
    )
