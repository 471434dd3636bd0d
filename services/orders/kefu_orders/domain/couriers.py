"""Courier coverage: which partner courier serves which region, and the choice for one address.

The table is data (``data/couriers.json``), not code: the shop edits it when a partner's service
area changes. The handbook (二、订单审核 1-3) says: choose the courier by the best option for the
customer and check the address is inside its service area; if no partner reaches it, contact the
customer and offer a refund.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

WILDCARD = "*"

_PROVINCE_SUFFIXES = (
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "特别行政区",
    "自治区",
    "省",
    "市",
)
_CITY_SUFFIXES = ("自治州", "地区", "市", "盟")


def _normalise(name: str, suffixes: Sequence[str]) -> str:
    # "浙江省" and "浙江" are the same province; the table may use either spelling.
    value = "".join(name.split()).casefold()
    for suffix in suffixes:
        if value.endswith(suffix) and len(value) > len(suffix):
            return value[: -len(suffix)]
    return value


class Region(BaseModel):
    """A province, optionally narrowed to a city and a district ("*" = all of it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    province: str = Field(min_length=1)
    city: str = WILDCARD
    district: str = WILDCARD

    def contains(self, province: str, city: str, district: str) -> bool:
        if self.province != WILDCARD and _normalise(self.province, _PROVINCE_SUFFIXES) != (
            _normalise(province, _PROVINCE_SUFFIXES)
        ):
            return False
        if self.city != WILDCARD and _normalise(self.city, _CITY_SUFFIXES) != _normalise(
            city, _CITY_SUFFIXES
        ):
            return False
        return self.district == WILDCARD or "".join(self.district.split()) == "".join(
            district.split()
        )


class Courier(BaseModel):
    """One partner courier: its names, its rank in the shop's preference and its area."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")
    names: dict[str, str] = Field(description="Display name per language (zh-CN, en).")
    rank: int = Field(ge=1, description="1 = the shop's first choice.")
    covers: list[Region] = Field(min_length=1)
    excludes: list[Region] = Field(default_factory=list)

    def name(self, language: str) -> str:
        return self.names.get(language) or self.names.get("zh-CN") or self.code

    def serves(self, province: str, city: str, district: str) -> bool:
        if any(r.contains(province, city, district) for r in self.excludes):
            return False
        return any(r.contains(province, city, district) for r in self.covers)


class CoverageTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    preference: str = Field(default="", description="Why the ranks are what they are.")
    couriers: list[Courier] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CoverageTable:
        codes = [c.code for c in self.couriers]
        if len(codes) != len(set(codes)):
            raise ValueError("couriers: codes must be unique")
        return self

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CoverageTable:
        return cls.model_validate({k: v for k, v in data.items() if not k.startswith("_")})

    def get(self, code_or_name: str | None) -> Courier | None:
        if not code_or_name:
            return None
        wanted = code_or_name.strip().casefold()
        for courier in self.couriers:
            names = {courier.code, *(n.casefold() for n in courier.names.values())}
            if wanted in names:
                return courier
        return None

    def choose(
        self, province: str, city: str, district: str, requested: str | None = None
    ) -> CourierChoice | None:
        """The customer's requested courier if it serves the address, else the best-ranked one
        that does; None if no partner serves it."""
        wanted = self.get(requested)
        if wanted is not None and wanted.serves(province, city, district):
            return CourierChoice(wanted, True)
        for courier in sorted(self.couriers, key=lambda c: c.rank):
            if courier.serves(province, city, district):
                return CourierChoice(courier, False)
        return None


@dataclass(frozen=True)
class CourierChoice:
    courier: Courier
    requested_by_customer: bool
