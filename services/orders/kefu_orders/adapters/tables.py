"""The packaged data tables (courier coverage, duty roster, note units), or files that replace
them (settings ``*_file``). A bad table stops the service at start-up, naming the file."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from kefu_orders.domain.couriers import CoverageTable
from kefu_orders.domain.notes import NoteFormat
from kefu_orders.domain.roster import DutyRoster


def _read(path: str, packaged: str) -> tuple[str, dict[str, Any]]:
    if path:
        name, text = path, Path(path).read_text(encoding="utf-8")
    else:
        name = f"kefu_orders/data/{packaged}"
        text = resources.files("kefu_orders").joinpath(f"data/{packaged}").read_text("utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a JSON object")
    return name, data


def _load(cls: Any, path: str, packaged: str) -> Any:
    name, data = _read(path, packaged)
    try:
        return cls.from_data(data)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def coverage_table(path: str = "") -> CoverageTable:
    table: CoverageTable = _load(CoverageTable, path, "couriers.json")
    return table


def duty_roster(path: str = "") -> DutyRoster:
    roster: DutyRoster = _load(DutyRoster, path, "duty_roster.json")
    return roster


def note_format(path: str = "") -> NoteFormat:
    notes: NoteFormat = _load(NoteFormat, path, "note_units.json")
    return notes
