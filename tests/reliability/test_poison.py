"""Poison test (issue 13, small size): malformed and contract-breaking records on every
inbound topic land in the consuming services' dead-letter topics with the reason, while good
records around them are processed and no process dies.

The full size (1,000 poison records) is ``uv run python -m tests.reliability.full_run --poison``.
"""

from __future__ import annotations

import pytest
from kefu_local.infra import LocalInfra

from .fleet import Fleet
from .poison import PoisonConfig, PoisonReport, poison_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SMALL = PoisonConfig(poison=150, good=40, converge_seconds=180)


@pytest.fixture(scope="module")
async def poison(fleet: Fleet, faults: LocalInfra) -> PoisonReport:
    report = await poison_scenario(fleet, faults, SMALL)
    print("\nPOISON TEST (small)\n" + "\n".join(report.lines()))
    return report


def test_every_poison_record_reaches_the_dead_letter_topic_of_each_consumer(
    poison: PoisonReport,
) -> None:
    # The poison, one 900 kB record and one at the broker's size limit (judged below).
    assert poison.counts["poison records sent"] == SMALL.poison + 2
    missing = {k: n for k, n in poison.missing_by_kind.items() if k != "size:at_the_limit"}
    assert missing == {}


def test_a_record_at_the_brokers_size_limit_is_dead_lettered_too(poison: PoisonReport) -> None:
    assert poison.missing_by_kind.get("size:at_the_limit", 0) == 0


def test_dead_letters_carry_the_reason(poison: PoisonReport) -> None:
    assert poison.findings.get("dead letters without a reason") is None


def test_good_records_mixed_into_the_poison_are_processed_and_never_dead_lettered(
    poison: PoisonReport,
) -> None:
    assert poison.counts["good records sent"] > 0
    assert (
        poison.counts["good records processed (inquiry.received)"]
        == poison.counts["good records sent"]
    )
    assert poison.counts["good records dead-lettered"] == 0


def test_no_service_process_dies_or_stops_being_ready(poison: PoisonReport) -> None:
    assert poison.counts["service processes that died"] == 0
    assert poison.counts["service processes not ready afterwards"] == 0
