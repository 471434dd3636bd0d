"""The kafka-tls component (deploy/k8s/components/kafka-tls) on a secured cluster: every kefu
Deployment and the topics Job mount the Secret kefu-kafka-tls read-only and their KAFKA_SSL_*
paths point inside it; the Job writes its client properties from that environment; KEDA's
Kafka triggers log in through the TriggerAuthentication with the same CA; and without the
component nothing of it is rendered and nothing else differs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_model import (
    EXTERNAL_SECRETS,
    container_env,
    index,
    kefu_deployments,
    of_kind,
)

from conftest import SECURED_PLATFORM

TLS = "production+components+kafka-tls"
WITHOUT = ("dev", "production", "production+components")
SECRET = "kefu-kafka-tls"
MOUNT = "/etc/kefu/kafka-tls"
# The Secret's keys (cert-manager's names): the CA bundle, the client certificate and its key.
KEYS = {
    "KAFKA_SSL_CAFILE": "ca.crt",
    "KAFKA_SSL_CERTFILE": "tls.crt",
    "KAFKA_SSL_KEYFILE": "tls.key",
}
JOB = "kefu-kafka-topics"
# The values KEDA's Kafka scaler accepts (pkg/scalers/kafka_scaler.go, kafkaMetadata).
KEDA_SASL = {"none", "plaintext", "scram_sha256", "scram_sha512"}
KEDA_TLS = {"enable", "disable"}


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every kefu Deployment's and the topics Job's pod template, by name."""
    pods = {name: d["spec"]["template"] for name, d in kefu_deployments(docs).items()}
    pods |= {name: d["spec"]["template"] for name, d in of_kind(docs, "Job").items()}
    return pods


def _env(docs: list[dict[str, Any]], pod: dict[str, Any]) -> dict[str, str | None]:
    return container_env(docs, pod["spec"]["containers"][0], EXTERNAL_SECRETS).values


def test_every_pod_mounts_the_secret_read_only_and_its_paths_point_inside(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered[TLS]
    pods = _pods(docs)
    assert JOB in pods, sorted(pods)
    assert kefu_deployments(docs), "no kefu Deployment rendered"
    for name, template in pods.items():
        pod = template["spec"]
        (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == SECRET]
        assert not volume["secret"].get("optional"), f"{name}: a pod must not start without its CA"
        # Read by the pod's group only: the pod must have one.
        assert volume["secret"]["defaultMode"] == 0o440, name
        assert pod["securityContext"]["fsGroup"], name
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
        assert mount == {"name": volume["name"], "mountPath": MOUNT, "readOnly": True}, name
        env = _env(docs, template)
        for variable, key in KEYS.items():
            assert env.get(variable) == f"{MOUNT}/{key}", f"{name}: {variable}={env.get(variable)}"
        assert env["KAFKA_SECURITY_PROTOCOL"] in ("SSL", "SASL_SSL"), name


def test_the_secured_platform_reaches_every_pod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered[TLS]
    for name, template in _pods(docs).items():
        env = _env(docs, template)
        for variable in ("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM"):
            assert env[variable] == SECURED_PLATFORM[variable], f"{name}: {variable}"
        sources = container_env(docs, template["spec"]["containers"][0], EXTERNAL_SECRETS).sources
        assert sources["KAFKA_SASL_USERNAME"] == sources["KAFKA_SASL_PASSWORD"] == "secret", name


def _job_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = of_kind(docs, "Job")[JOB]["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def test_the_topics_job_writes_its_client_config_from_that_environment(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The Job's rendered environment, with the Secret's files and values the cluster would
    fill in, run through its script (a stand-in kafka-topics.sh records the properties)."""
    from test_deploy_topics import run_script

    docs = rendered[TLS]
    container = _job_container(docs)
    resolved = container_env(docs, container, EXTERNAL_SECRETS)
    for variable in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        (entry,) = [e for e in container["env"] if e["name"] == variable]
        assert entry["valueFrom"]["secretKeyRef"]["name"] == "kefu-kafka-topics-secrets"
    files = tmp_path / "kafka-tls"
    files.mkdir()
    for key in KEYS.values():
        (files / key).write_text(f"-----BEGIN X-----\n{key}\n-----END X-----\n")
    env = {
        k: str(v).replace(MOUNT, str(files))
        for k, v in resolved.values.items()
        if k.startswith("KAFKA_") and v is not None
    }
    env |= {"KAFKA_SASL_USERNAME": "kefu-topics", "KAFKA_SASL_PASSWORD": "s3cret"}
    properties = run_script(tmp_path, **env).properties
    assert properties["security.protocol"] == "SASL_SSL"
    assert properties["sasl.mechanism"] == "SCRAM-SHA-512"
    assert properties["sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="kefu-topics" password="s3cret";'
    )
    assert properties["ssl.truststore.type"] == "PEM"
    assert properties["ssl.truststore.location"] == str(files / "ca.crt")
    assert properties["ssl.keystore.type"] == "PEM"
    assert properties["ssl.keystore.certificate.chain"] == (files / "tls.crt").read_text()
    assert properties["ssl.keystore.key"] == (files / "tls.key").read_text()


@pytest.mark.parametrize("variant", ["production+components", TLS])
def test_keda_triggers_log_in_through_the_trigger_authentication(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    auths = of_kind(docs, "TriggerAuthentication")
    deployments = kefu_deployments(docs)
    for name, scaled in of_kind(docs, "ScaledObject").items():
        target = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        env = _env(docs, target["spec"]["template"])
        for trigger in (t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"):
            auth = auths[trigger["authenticationRef"]["name"]]["spec"]
            # KEDA resolves these in the scaled Deployment's first container: each must be there.
            params = {e["parameter"]: e["name"] for e in auth["env"]}
            assert not {e.get("containerName") for e in auth["env"]} - {None}
            assert {"sasl", "tls", "username", "password"} <= set(params), name
            for variable in params.values():
                assert variable in env, f"{name}: {variable} is not in its Deployment's env"
            assert env[params["sasl"]] in KEDA_SASL | {None}, env[params["sasl"]]
            assert env[params["tls"]] in KEDA_TLS | {None}, env[params["tls"]]
            refs = {r["parameter"]: (r["name"], r["key"]) for r in auth.get("secretTargetRef", [])}
            if variant == TLS:
                assert env[params["tls"]] == "enable"
                assert env[params["sasl"]] == SECURED_PLATFORM["KEDA_KAFKA_SASL"]
                assert refs == {
                    "ca": (SECRET, "ca.crt"),
                    "cert": (SECRET, "tls.crt"),
                    "key": (SECRET, "tls.key"),
                }
            else:
                assert env[params["tls"]] is None
                assert env[params["sasl"]] is None
                assert not refs


def _without_the_component(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kafka-tls render with the component's additions (and the test's platform keys)
    taken out again."""
    out = []
    for doc in copy.deepcopy(docs):
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "Job"):
            pod = spec["template"]["spec"]
            pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "kafka-tls"]
            for container in pod["containers"]:
                mounts = container["volumeMounts"]
                container["volumeMounts"] = [m for m in mounts if m["name"] != "kafka-tls"]
            if doc["kind"] == "Job":
                del pod["securityContext"]["fsGroup"]
        if doc["kind"] == "TriggerAuthentication":
            del spec["secretTargetRef"]
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("kefu-platform-"):
            for key in {"KAFKA_SSL_CAFILE", "KEDA_KAFKA_TLS", *SECURED_PLATFORM}:
                del doc["data"][key]
        out.append(doc)
    return out


def _named(docs: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """By kind and name, with kefu-platform's hash suffix (it changes with its data) dropped."""
    text = re.sub(r"kefu-platform-[a-z0-9]{10}\b", "kefu-platform", json.dumps(docs))
    return index(json.loads(text))


def test_without_the_component_nothing_changes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    before = _named(rendered["production+components"])
    after = _named(_without_the_component(rendered[TLS]))
    assert set(after) == set(before)
    for key, doc in before.items():
        assert after[key] == doc, f"the kafka-tls component changes {key} beyond its additions"
    for variant in WITHOUT:
        docs = rendered[variant]
        assert SECRET not in json.dumps(docs), f"{variant} names {SECRET} without the component"
        for name, template in _pods(docs).items():
            env = _env(docs, template)
            for variable in (*KEYS, "KEDA_KAFKA_TLS"):
                assert env.get(variable) is None, f"{variant}: {name} sets {variable}"
