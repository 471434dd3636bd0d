"""Survey rounds: at least once a quarter, a sample of the customers served lately is asked
how satisfied they are overall (DOMAIN.md 4.1), beside the surveys that follow each case.

The sample is deterministic for a round id (customers ordered by a hash of round id and customer
id), so starting the same round twice, or after a crash, draws the same customers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RoundStatus(StrEnum):
    ISSUING = "issuing"
    """Invitations are being sent (a background loop works through ``pending``)."""
    DONE = "done"


class RoundConflict(ValueError):
    """A round with this id exists with other parameters."""


class SurveyRound(BaseModel):
    model_config = ConfigDict(frozen=True)

    round_id: str
    requested_sample_size: int = Field(ge=1)
    lookback_days: int = Field(ge=1)
    population: int
    sampled: list[str]
    pending: list[str]
    started_at: datetime
    status: RoundStatus
    started_by: str = "api"

    def issued(self, customers: Iterable[str]) -> SurveyRound:
        done = set(customers)
        pending = [c for c in self.pending if c not in done]
        status = RoundStatus.DONE if not pending else RoundStatus.ISSUING
        return self.model_copy(update={"pending": pending, "status": status})


def sample(eligible: Iterable[str], size: int, seed: str) -> list[str]:
    """``size`` customers, the same ones for the same seed and population."""

    def rank(customer_id: str) -> str:
        return hashlib.sha256(f"{seed}:{customer_id}".encode()).hexdigest()

    return sorted(sorted(set(eligible), key=rank)[:size])


def quarter_of(moment: datetime) -> str:
    """The round id of the automatic quarterly round, e.g. ``2026-Q2``."""
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"
