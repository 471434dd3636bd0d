"""The demo profile: the handbooks' durations shrunk so that a day happens in minutes.

The 20-minute payment window becomes 25 seconds, SLAs are seconds, timers scan every second.
Every value is an ordinary setting of the service (see each service's README), set here as
environment variables of the service processes.
"""

from __future__ import annotations

from importlib import resources


def demo_environment() -> dict[str, str]:
    data = resources.files("kefu_local").joinpath("data")
    sla_file = data.joinpath("demo_sla.json")
    return {
        "KEFU_DEMO": "1",
        # inquiry: SLAs in seconds, scans often
        "KEFU_INQUIRY_SLA_FILE": str(sla_file),
        "KEFU_INQUIRY_SLA_SCAN_SECONDS": "1",
        # orders: remind at 10 s, lost at 25 s (the handbook's 20 minutes), expire at 60 s
        "KEFU_ORDERS_FIRST_REMINDER_SECONDS": "10",
        "KEFU_ORDERS_LOST_AFTER_SECONDS": "25",
        "KEFU_ORDERS_SECOND_REMINDER_SECONDS": "40",
        "KEFU_ORDERS_EXPIRE_AFTER_SECONDS": "60",
        "KEFU_ORDERS_EVIDENCE_GRACE_SECONDS": "3",
        "KEFU_ORDERS_TIMER_SCAN_SECONDS": "1",
        # after-sales: timers scan every second
        "KEFU_AFTERSALES_TIMER_SCAN_SECONDS": "1",
        # notifier: no quiet hours in a demo, a generous rate limit, quick dispatch
        "KEFU_NOTIFIER_QUIET_HOURS_CHANNELS": "[]",
        "KEFU_NOTIFIER_RATE_LIMIT_PER_CUSTOMER": "50",
        "KEFU_NOTIFIER_DISPATCH_POLL_SECONDS": "0.5",
        # feedback: survey links point at the local service
        "KEFU_FEEDBACK_SURVEY_BASE_URL": "http://127.0.0.1:8106",
        "KEFU_FEEDBACK_GAUGE_REFRESH_SECONDS": "5",
        # feedback: staffed around the clock, so business-hour times exist at any hour
        "KEFU_FEEDBACK_BUSINESS_HOURS_FILE": str(data.joinpath("demo_business_hours.json")),
    }
