"""The case state machine, as data: per kind, which state may follow which (``data/flows.json``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kefu_shared.contracts.aftersales import CaseKind, CaseState


@dataclass(frozen=True)
class Flows:
    allowed: Mapping[CaseKind, Mapping[CaseState, frozenset[CaseState]]]

    def next_states(self, kind: CaseKind, state: CaseState) -> frozenset[CaseState]:
        return self.allowed.get(kind, {}).get(state, frozenset())

    def allows(self, kind: CaseKind, source: CaseState, target: CaseState) -> bool:
        return target in self.next_states(kind, source)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Flows:
        allowed: dict[CaseKind, dict[CaseState, frozenset[CaseState]]] = {}
        for kind, table in data.items():
            if kind.startswith("_"):
                continue
            allowed[CaseKind(kind)] = {
                CaseState(source): frozenset(CaseState(t) for t in targets)
                for source, targets in table.items()
            }
        missing = set(CaseKind) - set(allowed)
        if missing:
            raise ValueError(f"flows: no state machine for {sorted(missing)}")
        return cls(allowed)


def load_flows(path: str | Path | None = None) -> Flows:
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files("kefu_aftersales").joinpath("data/flows.json").read_text("utf-8")
    return Flows.from_data(json.loads(text))
