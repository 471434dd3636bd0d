"""The order note in the handbook's strict format: who bought, what, their requests, the courier.

Handbook: 备注成交人名字、购买货品详情、客户要求、客户指定快递。如:[**]6瓶1983,发韵达. In English:
``[customer] 6 bottles 1983, ship with Yunda``. Units per product category are data
(``data/note_units.json``): six bottles of liquor, two boxes of tea.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kefu_shared.contracts.orders import OrderLine
from pydantic import BaseModel, ConfigDict, Field

ZH = "zh-CN"
EN = "en"


class Unit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    zh: str = Field(min_length=1, description="Measure word, e.g. 瓶.")
    en_one: str = Field(min_length=1)
    en_many: str = Field(min_length=1)


class NoteFormat(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    units: dict[str, Unit] = Field(description="By product category; 'default' for the rest.")

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> NoteFormat:
        table = cls.model_validate({k: v for k, v in data.items() if not k.startswith("_")})
        if "default" not in table.units:
            raise ValueError("units: a 'default' unit is required")
        return table

    def unit(self, category: str) -> Unit:
        return self.units.get(category.strip().casefold()) or self.units["default"]

    def note(
        self,
        customer: str,
        lines: Sequence[OrderLine],
        requests: str,
        courier_name: str | None,
        *,
        no_coverage: bool,
        language: str,
    ) -> str:
        """``[王芳]6瓶1983,送礼,发韵达`` or ``[Wang Fang] 6 bottles 1983, gift, ship with
        Yunda``."""
        requests = " ".join(requests.split())
        if language == EN:
            items = [self._en_item(line) for line in lines]
            if courier_name:
                tail = f"ship with {courier_name}"
            elif no_coverage:
                tail = "no partner courier covers the address"
            else:
                tail = "courier to be confirmed"
            parts = [*items, *([requests] if requests else []), tail]
            return f"[{customer}] " + ", ".join(parts)
        items = [f"{line.quantity}{self.unit(line.category).zh}{line.name}" for line in lines]
        if courier_name:
            tail = f"发{courier_name}"
        elif no_coverage:
            tail = "无合作快递可达"
        else:
            tail = "快递待定"
        # The handbook's own example uses an ASCII comma without spaces; kept exactly.
        return f"[{customer}]" + ",".join([*items, *([requests] if requests else []), tail])

    def _en_item(self, line: OrderLine) -> str:
        unit = self.unit(line.category)
        word = unit.en_one if line.quantity == 1 else unit.en_many
        return f"{line.quantity} {word} {line.name}"
