"""Crash test (issue 13, small size): every service process SIGKILLed and restarted while
traffic flows, the broker restarted once; then nothing lost, nothing twice.

The full size (10,000 inquiries, 2,000 orders, three kills each) is
``uv run python -m tests.reliability.full_run --crash``.
"""

from __future__ import annotations

import pytest
from kefu_local.infra import LocalInfra

from .crash import CrashConfig, CrashReport, crash_scenario
from .fleet import Fleet

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SMALL = CrashConfig(
    inquiries=300,
    orders=60,
    kills_per_instance=1,
    broker_restarts=1,
    traffic_seconds=40,
    converge_seconds=300,
)


@pytest.fixture(scope="module")
async def crash(fleet: Fleet, faults: LocalInfra) -> CrashReport:
    report = await crash_scenario(fleet, faults, SMALL)
    print("\nCRASH TEST (small)\n" + "\n".join(report.lines()))
    return report


def test_every_service_process_was_killed_and_the_broker_restarted_while_traffic_flowed(
    crash: CrashReport,
) -> None:
    assert crash.counts["faults: SIGKILL + restart"] == 6  # five services, inquiry twice
    assert crash.counts["faults: broker restarts"] == 1
    assert "not running after the faults" not in crash.findings


def test_every_customer_message_was_received_exactly_once(crash: CrashReport) -> None:
    assert crash.counts["inquiries received (inquiry.received/spam_filtered)"] == SMALL.inquiries
    assert crash.findings.get("messages never received") is None
    assert crash.findings.get("messages received twice") is None
    assert crash.findings.get("inquiries not classified exactly once") is None
    assert crash.findings.get("bot answers missing") is None


def test_every_order_reached_its_final_state_exactly_once(crash: CrashReport) -> None:
    assert crash.counts["orders in their final state (by event)"] == SMALL.orders
    assert crash.findings.get("orders without their final event") is None
    assert crash.findings.get("orders with the final event twice") is None


def test_every_requested_notification_finished_once_and_none_was_sent_twice(
    crash: CrashReport,
) -> None:
    assert crash.counts["notifications sent (keys)"] > 0
    for finding in (
        "notifications never finished",
        "notifications finished twice",
        "notifications sent twice",
        "expected bot answers not sent",
        "shipping notices not sent",
    ):
        assert crash.findings.get(finding) is None, finding


def test_no_change_was_published_twice_under_different_ids(crash: CrashReport) -> None:
    assert crash.counts["events read on the five event topics"] > SMALL.inquiries
    assert crash.counts["changes published under two ids"] == 0, crash.findings.get(
        "changes published under two ids"
    )


def test_no_good_record_or_event_was_dead_lettered(crash: CrashReport) -> None:
    assert crash.counts["dead-lettered records"] == 0, crash.findings.get("dead-lettered")


def test_agents_read_the_final_states_over_http(crash: CrashReport) -> None:
    assert crash.counts["inquiries read over HTTP"] == SMALL.inquiries
    assert crash.counts["orders read over HTTP"] == SMALL.orders
    assert crash.findings.get("inquiries in the wrong state over HTTP") is None
    assert crash.findings.get("orders in the wrong state over HTTP") is None
    assert crash.findings.get("sent deliveries not 'sent' over HTTP") is None
