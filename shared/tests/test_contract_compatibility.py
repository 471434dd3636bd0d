"""Published contracts: committed JSON Schema snapshots, and changes that would break consumers."""

import json
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

import pytest
from kefu_shared.catalogue import check_compatible, published_contracts, render_catalogue
from kefu_shared.envelope import EventData

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = DOCS / "events" / "schemas"


class Courier(StrEnum):
    SF = "sf"
    YUNDA = "yunda"


class CourierWider(StrEnum):
    SF = "sf"
    YUNDA = "yunda"
    ZTO = "zto"


class ParcelV1(EventData):
    event_type: ClassVar[str] = "test.parcel"
    topic: ClassVar[str] = "t"
    subject_field: ClassVar[str] = "order_id"
    order_id: str
    weight_grams: int
    courier: Courier
    note: str | None = None


def schema(cls: type[EventData]) -> dict[str, object]:
    return cls.model_json_schema(mode="serialization")


def test_additive_changes_keep_the_contract() -> None:
    class Added(ParcelV1):
        insured: bool = False  # new optional field
        courier: CourierWider  # type: ignore[assignment]  # more enum values
        weight_grams: float  # type: ignore[assignment]  # integer widened to number

    assert check_compatible(schema(ParcelV1), schema(Added)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("removed", "note: field removed or renamed"),
        ("required", "signature: required field added"),
        ("narrowed", "weight_grams: type narrowed"),
        ("enum", "courier: enum values removed ['yunda']"),
    ],
)
def test_breaking_changes_are_caught(change: str, expected: str) -> None:
    class Removed(EventData):
        event_type: ClassVar[str] = "test.parcel"
        topic: ClassVar[str] = "t"
        subject_field: ClassVar[str] = "order_id"
        order_id: str
        weight_grams: int
        courier: Courier

    class Required(ParcelV1):
        signature: str

    class Narrowed(ParcelV1):
        weight_grams: str  # type: ignore[assignment]

    class OnlySf(StrEnum):
        SF = "sf"

    class Enum(ParcelV1):
        courier: OnlySf  # type: ignore[assignment]

    new = {"removed": Removed, "required": Required, "narrowed": Narrowed, "enum": Enum}[change]
    problems = check_compatible(schema(ParcelV1), schema(new))
    assert any(p.startswith(expected) for p in problems), problems


def test_every_published_contract_has_a_snapshot_and_stays_compatible_with_it() -> None:
    missing, broken = [], {}
    for contract in published_contracts():
        path = SCHEMAS / f"{contract.key}.json"
        if not path.exists():
            missing.append(contract.key)
            continue
        problems = check_compatible(json.loads(path.read_text()), contract.schema())
        if problems:
            broken[contract.key] = problems
    assert not missing, f"no snapshot for {missing}: run `./kefu contracts export` and commit"
    assert not broken, f"breaking changes (publish a new version instead): {broken}"


def test_the_event_catalogue_page_is_generated_from_the_contracts() -> None:
    page = (DOCS / "events.md").read_text()
    assert page == render_catalogue(), "docs/events.md is stale: run `./kefu contracts export`"
