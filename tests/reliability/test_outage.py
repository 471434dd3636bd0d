"""Dependency outage (issue 13, small size): the store, then the broker, away under traffic.

Services say so on /readyz, keep what they accepted, and recover by themselves (same process,
no restart). The full size (30 s each) is ``uv run python -m tests.reliability.full_run
--outage``.
"""

from __future__ import annotations

import pytest
from kefu_local.infra import LocalInfra

from .fleet import Fleet
from .outage import OutageConfig, OutageReport, outage_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SMALL = OutageConfig(outage_seconds=12, messages=15, stall_seconds=10, http_bound_seconds=8)


@pytest.fixture(scope="module")
async def outage(fleet: Fleet, faults: LocalInfra) -> OutageReport:
    report = await outage_scenario(fleet, faults, SMALL)
    print("\nOUTAGE TEST (small)\n" + "\n".join(report.lines()))
    return report


@pytest.mark.parametrize("dependency", ["mongodb", "kafka"])
def test_every_service_reports_not_ready_while_a_dependency_is_away(
    outage: OutageReport, dependency: str
) -> None:
    phase = outage.phase(f"{dependency} away {SMALL.outage_seconds:.0f}s")
    assert phase.not_ready_seen
    assert all(phase.not_ready_seen.values()), phase.not_ready_seen


@pytest.mark.parametrize("dependency", ["mongodb", "kafka"])
def test_every_service_is_ready_again_by_itself_without_a_restart(
    outage: OutageReport, dependency: str
) -> None:
    phase = outage.phase(f"{dependency} away {SMALL.outage_seconds:.0f}s")
    assert set(phase.ready_again_after) == set(phase.not_ready_seen)
    assert phase.restarted == []


def test_no_work_accepted_while_the_store_is_away_is_lost(outage: OutageReport) -> None:
    store = outage.phase(f"mongodb away {SMALL.outage_seconds:.0f}s")
    assert len(store.produced) == SMALL.messages  # on the broker while the store was away
    assert store.lost == []


def test_work_accepted_while_the_broker_is_away_is_counted(outage: OutageReport) -> None:
    broker = outage.phase(f"kafka away {SMALL.outage_seconds:.0f}s")
    assert len(broker.produced) == SMALL.messages  # unread when the broker went away
    assert len(broker.accepted) == SMALL.messages  # HTTP 202 while the broker was away


def test_no_work_accepted_while_the_broker_is_away_is_lost(outage: OutageReport) -> None:
    broker = outage.phase(f"kafka away {SMALL.outage_seconds:.0f}s")
    assert broker.lost == []


def test_a_request_while_the_store_is_away_is_answered_in_bounded_time(
    outage: OutageReport,
) -> None:
    store = outage.phase(f"mongodb away {SMALL.outage_seconds:.0f}s")
    assert 0 not in store.http_statuses  # every request got an answer
    assert store.slowest_http_seconds < SMALL.http_bound_seconds


def test_a_request_while_the_store_is_away_is_answered_503_not_500(
    outage: OutageReport,
) -> None:
    store = outage.phase(f"mongodb away {SMALL.outage_seconds:.0f}s")
    assert set(store.http_statuses) == {503}, dict(store.http_statuses)


def test_a_request_to_a_stalled_store_is_answered_in_bounded_time(outage: OutageReport) -> None:
    assert 0 < outage.stalled_http_seconds < SMALL.http_bound_seconds
