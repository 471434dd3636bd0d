"""A known week of events through the real broker (shuffled, with duplicates) -> the KPIs a
supervisor would compute by hand, surveys answered, and the report rendered with its charts.

The week: Monday 2026-03-02 to Monday 2026-03-09, shop time (+08:00), i.e.
[2026-03-01 16:00Z, 2026-03-08 16:00Z). Opening hours 09:00-24:00 local = 01:00-16:00 UTC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from feedback_testkit import (
    GIFT_BOX,
    Clock,
    InquiryScript,
    Published,
    at,
    delivery,
    make_settings,
    policy_file,
    produce_all,
    the_week,
    topic_json,
)
from kefu_feedback.bootstrap import create_app
from kefu_feedback.domain.intake import facts_of_inquiry_event
from kefu_feedback.entrypoints import cli
from kefu_local.pytest_plugin import running
from kefu_shared import topics
from kefu_shared.testing import eventually
from pymongo import AsyncMongoClient

pytestmark = pytest.mark.integration

WEEK = {"from": "2026-03-02", "to": "2026-03-09"}


def expected_fact_ids(scripts: list[InquiryScript], published: Published) -> set[str]:
    ids = {f.id for s in scripts for e in s.events for f in facts_of_inquiry_event(e)}
    ids.add("spam:S1:S1-m0")
    from kefu_feedback.domain.intake import facts_of_order_event as order_facts
    from kefu_shared.contracts.orders import ORDER_EVENT_TYPES
    from kefu_shared.envelope import Envelope

    for topic, _, body in published.items:
        if topic == topics.ORDERS_EVENTS:
            env = Envelope[dict[str, Any]].model_validate_json(body)
            cls = next(c for c in ORDER_EVENT_TYPES if c.event_type == env.type)
            ids |= {f.id for f in order_facts(env.payload(cls))}
    return ids


def close(actual: float | None, expected: float) -> bool:
    return actual is not None and abs(actual - expected) < 1e-6


async def test_a_known_week_through_the_broker_gives_the_hand_computed_kpis_and_report(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    tmp_path: Path,
) -> None:
    # Surveys of this old week must still go out (max age), and customer c2's two inquiries
    # both get one (no cooldown here: the N-day rule has its own test).
    settings = make_settings(
        service_overrides,
        unique,
        policy_file=policy_file(tmp_path, max_age_hours=24 * 365, cooldown_days=0),
        gauge_window_hours=24 * 30,
    )
    clock = Clock(at(8, 10))  # Sunday 18:00 local: answers fall inside the week
    app = create_app(settings, clock=clock)
    scripts, published = the_week()
    wanted = expected_fact_ids(scripts, published)
    db = mongo_client[settings.mongodb_database]

    async with running(app) as client:
        await produce_all(kafka_bootstrap, settings, published.shuffled(seed=7))

        async def all_facts_in() -> bool:
            return await db["facts"].count_documents({}) >= len(wanted)

        await eventually(all_facts_in, timeout=60)
        assert {d["_id"] async for d in db["facts"].find({}, {"_id": 1})} == wanted

        # One invitation per resolved inquiry (I2 resolved twice; duplicates): six.
        invitations = await topic_json(
            kafka_bootstrap, settings, topics.NOTIFICATION_REQUESTS, expect=6, settle=1.5
        )
        keys = sorted(i["data"]["idempotency_key"] for i in invitations)
        assert keys == [f"inquiry-I{n}" for n in (1, 2, 3, 4, 5, 7)]
        assert all(i["data"]["template"] == "survey_invitation" for i in invitations)
        assert all(i["data"]["purpose"] == "survey_invitation" for i in invitations)

        # The customers answer through their links; the bot's invitation could not be sent.
        links = app.state.deps.links
        answers = {
            "inquiry-I1": {
                "overall": 5,
                "ratings": {"product_quality": 5, "service_efficiency": 4, "price": 3},
            },
            "inquiry-I2": {
                "overall": 2,
                "ratings": {"service_efficiency": 1},
                "comment": "等了太久",
            },
            "inquiry-I3": {"overall": 4, "ratings": {"after_sales_service": 2}},
            "inquiry-I5": {"overall": 4, "ratings": {"product_quality": 4, "price": 2}},
        }
        for survey_id, body in answers.items():
            r = await client.post(
                f"/surveys/{survey_id}/answers", json={"token": links.token(survey_id), **body}
            )
            assert r.status_code == 201, r.text
        failed = Published()
        failed.add(delivery("failed", "inquiry-I4", "c4", at(4, 5)), source="notifier")
        await produce_all(kafka_bootstrap, settings, failed.items)

        async def i4_undeliverable() -> bool:
            r = await client.get("/surveys/inquiry-I4/record")
            return bool(r.json()["status"] == "undeliverable")

        await eventually(i4_undeliverable, timeout=30)

        r = await client.get("/kpis", params=WEEK)
        assert r.status_code == 200, r.text
        k = r.json()

        assert k["volume"] == {
            "inquiries_opened": 6,
            "customer_messages": 8,
            "spam_filtered": 1,
            "resolved_by_agent": 6,
            "resolved_by_bot": 1,
        }
        # First responses: 90, 120, 4800, 5400, 7200 s; in business hours 90, 120, 600, 3600,
        # 7200 (I2 waited through the night, I7 from 23:00 to 00:30).
        fr = k["first_response"]
        assert (fr["count"], fr["p50_seconds"], fr["p90_seconds"]) == (5, 4800, 7200)
        assert close(fr["mean_seconds"], 3522)
        b = fr["business_hours"]
        assert (b["p50_seconds"], b["p90_seconds"]) == (600, 7200)
        assert close(b["mean_seconds"], 2322)
        nr = k["next_response"]
        assert (nr["count"], nr["mean_seconds"], nr["p50_seconds"], nr["p90_seconds"]) == (
            2,
            450,
            300,
            600,
        )
        assert nr["business_hours"]["p50_seconds"] == 0  # 01:20 local: closed
        # Resolutions by agents: 1800, 1800, 6000, 7200, 10800, 130200 (I2's second).
        res = k["resolution"]
        assert (res["count"], res["p50_seconds"], res["p90_seconds"]) == (6, 6000, 130200)
        assert close(res["mean_seconds"], 26300)
        assert (res["business_hours"]["p50_seconds"], res["business_hours"]["p90_seconds"]) == (
            1800,
            65400,
        )
        assert close(res["business_hours"]["mean_seconds"], 14000)

        sla = {s["sla"]: (s["clocks"], s["missed"]) for s in k["sla"]}
        assert sla == {"first_response": (6, 2), "next_response": (2, 1), "resolution": (7, 1)}

        fcr = k["first_contact_resolution"]
        assert (fcr["numerator"], fcr["denominator"]) == (3, 5)  # I1, I3, I7
        assert (k["reopen"]["numerator"], k["reopen"]["denominator"]) == (1, 6)

        csat = k["csat"]
        assert (csat["numerator"], csat["denominator"]) == (3, 4)
        assert close(csat["average_rating"], 3.75)
        dims = {d: (v["numerator"], v["denominator"]) for d, v in csat["by_dimension"].items()}
        assert dims == {
            "product_quality": (2, 2),
            "service_efficiency": (1, 2),
            "price": (0, 2),
            "user_experience": (0, 0),
            "after_sales_service": (0, 1),
        }
        # Invited in the week and not undeliverable: I1, I2, I3, I5, I7; answered: four.
        assert (csat["response"]["numerator"], csat["response"]["denominator"]) == (4, 5)

        # Served: A1 {c1, c2, c5}; A2 {c5, c2} (I3 is after-sales). Deals: A1 O1, A2 O2.
        assert (k["conversion"]["numerator"], k["conversion"]["denominator"]) == (2, 5)
        agents = {a["agent_id"]: a for a in k["agents"]}
        a1, a2 = agents["A1"], agents["A2"]
        assert (a1["served"], a1["deals"], a1["lost_orders"]) == (3, 1, 2)
        assert (a1["conversion_points"], a1["lost_order_points"], a1["score"]) == (
            -10.83,
            -1.0,
            -11.83,
        )
        assert (a2["served"], a2["deals"], a2["lost_orders"]) == (2, 1, 0)
        assert (a2["conversion_points"], a2["score"]) == (-2.5, -2.5)
        assert (a1["csat"]["numerator"], a1["csat"]["denominator"]) == (2, 3)
        assert k["lost_orders"] == 2

        grid = k["peak_hours"]["grid"]
        assert sum(map(sum, grid)) == 8
        assert grid[3][14] == 2  # Thursday 14:00 local: I5's two messages
        assert k["peak_hours"]["busiest"][0] == {"weekday": 3, "hour": 14, "messages": 2}
        fq = k["frequent_questions"]
        assert fq["top_categories"][0] == {"category": "product", "inquiries": 3}
        assert fq["knowledge_base_misses"][0]["inquiries"] == 2  # the gift box, asked twice
        assert fq["knowledge_base_misses"][0]["question"] == GIFT_BOX
        assert (fq["bot_answer"]["numerator"], fq["bot_answer"]["denominator"]) == (1, 6)

        # Slices: one channel, one agent.
        chat = (await client.get("/kpis", params={**WEEK, "channel": "chat"})).json()
        assert chat["volume"]["inquiries_opened"] == 3  # I1, I2, I4
        assert chat["first_response"]["count"] == 3  # I1, I2, I7
        a2_only = (await client.get("/kpis", params={**WEEK, "agent_id": "A2"})).json()
        assert a2_only["first_response"]["count"] == 3  # I3, I5, I7
        assert [a["agent_id"] for a in a2_only["agents"]] == ["A2"]

        # The dashboards: the same figures as gauges over the rolling window (30 days here).
        async def gauges_refreshed() -> bool:
            text = (await client.get("/metrics")).text
            return "kefu_feedback_lost_orders 2.0" in text

        await eventually(gauges_refreshed, timeout=15)
        metrics = (await client.get("/metrics")).text
        assert (
            'kefu_feedback_response_seconds{channel="all",measure="first_response",stat="p50"} '
            "4800.0" in metrics
        )
        assert (
            'kefu_feedback_sla_hit_ratio{channel="all",sla="first_response"} 0.6666666666666666'
            in metrics
        )
        assert 'kefu_feedback_kpi_ratio{channel="chat",kpi="bot_answer"} 0.25' in (metrics)

        # The report a supervisor reads on Monday, from the same numbers.
        written = cli.main(
            ["--from", WEEK["from"], "--to", WEEK["to"], "--out", str(tmp_path / "week.md")],
            fetch=lambda params: k,
        )
        assert written == 0
        markdown = (tmp_path / "week.md").read_text()
        assert "# Customer service report, 2026-03-02 to 2026-03-09" in markdown
        assert "| A1 | 3 | 1 | 33.3 % | -10.8 | 2 (-1.0) | **-11.8** |" in markdown
        for chart in ("peak_hours", "csat_by_dimension", "response_times"):
            png = (tmp_path / "week_charts" / f"{chart}.png").read_bytes()
            assert png.startswith(b"\x89PNG"), chart
            assert f"week_charts/{chart}.png" in markdown
        html = (await client.get("/report", params=WEEK)).text
        assert html.count("<svg") == 3
        assert "Satisfaction with price is only 0.0 %" in html

        # The low ratings were raised for follow-up, each once, to the right people.
        events = await topic_json(kafka_bootstrap, settings, topics.FEEDBACK_EVENTS, expect=7)
        follow_ups = {
            e["data"]["survey_id"]: (e["data"]["route"], e["data"]["low_dimensions"])
            for e in events
            if e["type"] == "survey.follow_up_raised"
        }
        assert follow_ups == {
            "inquiry-I2": ("supervisor", ["overall", "service_efficiency"]),
            "inquiry-I3": ("after_sales", ["after_sales_service"]),
            "inquiry-I5": ("supervisor", ["price"]),
        }
        assert sum(1 for e in events if e["type"] == "survey.answered") == 4
