"""The catalogue of published contracts: JSON Schema snapshots and the compatibility rule.

Every concrete ``EventData`` in ``kefu_shared.contracts`` is a published contract, identified by
``(event_type, event_version)``. Its JSON Schema is committed under ``docs/events/schemas/`` as a
snapshot; ``check_compatible(old, new)`` says whether a change keeps every existing consumer
working. Within one version only additive changes pass: a new optional field, a wider type, more
enum values. Removing or renaming a field, narrowing a type, or adding a required field breaks
the contract: publish ``event_version + 1`` beside the old one until consumers have moved.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kefu_shared import contracts
from kefu_shared.envelope import EventData

JsonSchema = dict[str, Any]


@dataclass(frozen=True)
class Contract:
    cls: type[EventData]

    @property
    def key(self) -> str:
        return f"{self.cls.event_type}.v{self.cls.event_version}"

    @property
    def owner(self) -> str:
        return self.cls.__module__.rsplit(".", 1)[-1]

    def schema(self) -> JsonSchema:
        schema = self.cls.model_json_schema(mode="serialization")
        schema["$id"] = f"https://kefu.dev/events/{self.key}.json"
        schema["x-kefu-topic"] = self.cls.topic
        schema["x-kefu-key"] = self.cls.subject_field
        schema["x-kefu-ce-type"] = self.cls.ce_type()
        return schema


def published_contracts() -> list[Contract]:
    """Every concrete contract class defined in ``kefu_shared.contracts``, sorted by key."""
    for module in pkgutil.iter_modules(contracts.__path__):
        importlib.import_module(f"{contracts.__name__}.{module.name}")
    found: dict[str, Contract] = {}
    pending: list[type[EventData]] = list(EventData.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith(contracts.__name__) and "event_type" in cls.__dict__:
            contract = Contract(cls)
            found[contract.key] = contract
    return [found[k] for k in sorted(found)]


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for contract in published_contracts():
        path = directory / f"{contract.key}.json"
        path.write_text(json.dumps(contract.schema(), indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def check_compatible(old: JsonSchema, new: JsonSchema) -> list[str]:
    """Reasons why ``new`` would break a consumer written against ``old`` (empty: compatible)."""
    problems: list[str] = []
    _compare(old, new, old.get("$defs", {}), new.get("$defs", {}), "", problems)
    return problems


def _resolve(node: JsonSchema, defs: dict[str, JsonSchema]) -> JsonSchema:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return defs.get(ref.removeprefix("#/$defs/"), {})
    return node


def _types(node: JsonSchema, defs: dict[str, JsonSchema]) -> set[str]:
    node = _resolve(node, defs)
    if "anyOf" in node:
        return set().union(*(_types(n, defs) for n in node["anyOf"]))
    kind = node.get("type")
    if isinstance(kind, list):
        return set(kind)
    if kind is None and "enum" in node:
        return {type(v).__name__ for v in node["enum"]}
    return {kind} if isinstance(kind, str) else {"any"}


def _compare(
    old: JsonSchema,
    new: JsonSchema,
    old_defs: dict[str, JsonSchema],
    new_defs: dict[str, JsonSchema],
    path: str,
    problems: list[str],
) -> None:
    old, new = _resolve(old, old_defs), _resolve(new, new_defs)
    old_types, new_types = _types(old, old_defs), _types(new, new_defs)
    widened = {"integer"} if "number" in new_types else set()
    if "any" not in new_types and not old_types <= new_types | widened:
        problems.append(
            f"{path or '(root)'}: type narrowed {sorted(old_types)} -> {sorted(new_types)}"
        )
        return
    old_enum, new_enum = _enum(old, old_defs), _enum(new, new_defs)
    if old_enum is not None and new_enum is not None and not old_enum <= new_enum:
        problems.append(f"{path}: enum values removed {sorted(old_enum - new_enum)}")
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    for name, old_prop in old_props.items():
        where = f"{path}.{name}" if path else name
        if name not in new_props:
            problems.append(f"{where}: field removed or renamed")
            continue
        _compare(old_prop, new_props[name], old_defs, new_defs, where, problems)
    added_required = set(new.get("required", ())) - set(old.get("required", ()))
    for name in sorted(added_required):
        where = f"{path}.{name}" if path else name
        problems.append(f"{where}: required field added")
    for key in ("items",):
        if key in old and key in new:
            _compare(old[key], new[key], old_defs, new_defs, f"{path}[]", problems)


def _enum(node: JsonSchema, defs: dict[str, JsonSchema]) -> set[Any] | None:
    node = _resolve(node, defs)
    if "enum" in node:
        return set(node["enum"])
    if "anyOf" in node:
        values = [_enum(n, defs) for n in node["anyOf"]]
        known = [v for v in values if v is not None]
        return set().union(*known) if known else None
    return None


def render_catalogue(schema_dir: str = "events/schemas") -> str:
    """The event catalogue page (Markdown), generated from the contracts themselves."""
    lines = [
        "# kefu event catalogue",
        "",
        "Generated by `kefu contracts export` from `kefu_shared.contracts`; do not edit by hand.",
        "Every event travels in the kefu envelope (id, type, version, source, time, subject,",
        "correlation_id, causation_id, data) with CloudEvents `ce_*` Kafka headers; the Kafka key",
        "is the subject. Within a version changes are additive only; a breaking change is a new",
        "version published beside the old one until consumers have moved.",
        "",
        "| event | version | topic | key (subject) | owner | schema | when |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in published_contracts():
        doc = " ".join((c.cls.__doc__ or "").split())
        when = doc.split(". ")[0].rstrip(".") if doc else ""
        lines.append(
            f"| `{c.cls.event_type}` | {c.cls.event_version} | `{c.cls.topic}` | "
            f"`{c.cls.subject_field}` | {c.owner} | [{c.key}.json]({schema_dir}/{c.key}.json) "
            f"| {when} |"
        )
    return "\n".join(lines) + "\n"
