"""What the deployment files must agree with, derived from the code: the services and their
settings (so a service that lands later is checked without editing these tests), the topics,
and small readers for Dockerfiles, topics.txt and rendered Kubernetes objects."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPONENTS = DEPLOY / "k8s" / "components"
OVERLAYS = ("dev", "production")
SERVICES = ("notifier", "inquiry", "orders", "aftersales", "feedback")
TOPICS_FILE = COMPONENTS / "kafka-topics" / "topics.txt"

# The Deployments (Kubernetes) and services (Compose) that run each kefu service.
K8S_WORKLOADS = {
    "notifier": ("kefu-notifier",),
    "inquiry": ("kefu-inquiry-chat", "kefu-inquiry-other"),
    "orders": ("kefu-orders",),
    "aftersales": ("kefu-aftersales",),
    "feedback": ("kefu-feedback",),
}
COMPOSE_WORKLOADS = {
    "notifier": ("notifier",),
    "inquiry": ("inquiry-chat", "inquiry-other"),
    "orders": ("orders",),
    "aftersales": ("aftersales",),
    "feedback": ("feedback",),
}
# Secrets a production cluster provides (not rendered by the production overlay).
# The topics Job's Kafka user (optional, SASL) and the kafka-tls component's files, likewise.
EXTERNAL_SECRETS = {f"kefu-{s}-secrets" for s in SERVICES} | {
    "kefu-auth",
    "kefu-data-keys",
    "kefu-kafka-topics-secrets",
    "kefu-kafka-tls",
}

_SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|_KEYS)$|^MONGODB_URI$")


# ---- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvVar:
    name: str
    required: bool
    secret: bool


def env_vars(cls: type[Any]) -> list[EnvVar]:
    """Every environment variable a settings class reads, as pydantic-settings names it."""
    from pydantic import AliasChoices

    prefix = str(cls.model_config.get("env_prefix", ""))
    out = []
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            env = alias.choices[0]
        elif isinstance(alias, str):
            env = alias
        else:
            env = f"{prefix}{name}"
        env = env.upper()
        secret = "SecretStr" in str(info.annotation) or bool(_SECRET_NAME.search(env))
        out.append(EnvVar(env, info.is_required(), secret))
    return out


def service_prefix(service: str) -> str:
    return f"KEFU_{service.upper()}_"


# ---- topics ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def topics_file() -> dict[str, Topic]:
    topics = {}
    for line in TOPICS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        configs = dict(c.split("=", 1) for c in parts[2].split(",")) if len(parts) > 2 else {}
        topics[parts[0]] = Topic(parts[0], int(parts[1]), configs)
    return topics


def code_topics() -> set[str]:
    """Every topic the code names: kefu_shared.topics, the ``*_TOPIC`` constants and event
    ``topic``s of the contracts, every channel of the services' AsyncAPI documents, and the
    dead-letter topic of every service."""
    import json
    import pkgutil

    from kefu_shared import contracts, topics

    names = {v for k, v in vars(topics).items() if k.isupper() and isinstance(v, str)}
    names |= set(topics.ALL_INBOUND_CHANNEL_TOPICS)
    names |= set(topics.EVENTS_TOPIC_OF_SERVICE.values())
    names |= {topics.dead_letter_topic(s) for s in SERVICES}
    for module_info in pkgutil.iter_modules(contracts.__path__):
        module = importlib.import_module(f"{contracts.__name__}.{module_info.name}")
        for key, value in vars(module).items():
            if key.endswith("_TOPIC") and isinstance(value, str):
                names.add(value)
            topic = getattr(value, "topic", None) if inspect.isclass(value) else None
            if isinstance(topic, str) and topic.startswith("kefu."):
                names.add(topic)
    for document in (ROOT / "docs" / "asyncapi").glob("*.json"):
        spec = json.loads(document.read_text())
        names |= {c["address"] for c in spec.get("channels", {}).values() if "address" in c}
    # A contract may name a family of topics ("kefu.inquiry.inbound.<channel>"): not a topic.
    return {n for n in names if re.fullmatch(r"kefu\.[a-z0-9._-]+", n)}


# ---- Dockerfiles ----------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    args: str


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[Instruction]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, each a list of instructions (enough for our checks)."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            key, _, value = flag[2:].partition("=")
            flags[key] = value
            rest = rest.lstrip()
        if keyword == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key.strip()] = value.strip()
            continue
        if keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else ""
            stages.append(Stage(image, name, []))
            continue
        stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return args, stages


def copy_sources(instruction: Instruction) -> list[str]:
    words = instruction.args
    parts = __import__("json").loads(words) if words.startswith("[") else shlex.split(words)
    return parts[:-1]


# ---- Kubernetes -----------------------------------------------------------------------------
def index(docs: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def of_kind(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@dataclass(frozen=True)
class ResolvedEnv:
    values: dict[str, str | None]  # None: from a Secret the cluster provides, or optional
    sources: dict[str, str]  # "configmap", "secret", "literal", "field"


def container_env(
    docs: list[dict[str, Any]], container: dict[str, Any], external_secrets: set[str]
) -> ResolvedEnv:
    """The environment a container gets, with every ConfigMap and Secret reference resolved
    against the rendered objects; a reference that resolves nowhere raises AssertionError."""
    import base64

    objects = index(docs)
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "envFrom only from ConfigMaps (Secret keys are listed)"
        ref = source["configMapRef"]["name"]
        cm = objects.get(("ConfigMap", ref))
        assert cm is not None, f"envFrom ConfigMap {ref} is not rendered"
        for key, value in cm.get("data", {}).items():
            values[key] = value
            sources[key] = "configmap"
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            values[name], sources[name] = entry["value"], "literal"
            continue
        ref = entry["valueFrom"]
        if "fieldRef" in ref:
            values[name], sources[name] = "pod-name", "field"
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            cm = objects.get(("ConfigMap", key_ref["name"]))
            assert cm is not None, f"{name}: ConfigMap {key_ref['name']} is not rendered"
            data = cm.get("data", {})
            assert key_ref["key"] in data or key_ref.get("optional"), (
                f"{name}: ConfigMap {key_ref['name']} has no key {key_ref['key']}"
            )
            values[name], sources[name] = data.get(key_ref["key"]), "configmap"
        elif "secretKeyRef" in ref:
            key_ref = ref["secretKeyRef"]
            sources[name] = "secret"
            secret = objects.get(("Secret", key_ref["name"]))
            if secret is None:
                assert key_ref["name"] in external_secrets, (
                    f"{name}: Secret {key_ref['name']} is neither rendered nor documented"
                )
                values[name] = None
                continue
            data = secret.get("data", {})
            if key_ref["key"] in data:
                values[name] = base64.b64decode(data[key_ref["key"]]).decode()
            else:
                assert key_ref.get("optional"), (
                    f"{name}: Secret {key_ref['name']} has no key {key_ref['key']}"
                )
                values[name] = None
        else:
            raise AssertionError(f"{name}: unsupported valueFrom {ref}")
    return ResolvedEnv(values, sources)


def kefu_deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: d
        for name, d in of_kind(docs, "Deployment").items()
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "kefu"
    }
