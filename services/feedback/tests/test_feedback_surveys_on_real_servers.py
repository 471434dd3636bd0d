"""Surveys on the real broker and store: who is invited (once), delivery reports, answers
through the link and the topic, rounds, and every kind of bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from feedback_testkit import (
    Clock,
    InquiryScript,
    Published,
    at,
    case_closed,
    delivery,
    make_settings,
    produce_all,
    produce_raw,
    topic_json,
)
from kefu_feedback.bootstrap import create_app
from kefu_local.pytest_plugin import auth_header, running
from kefu_shared import topics
from kefu_shared.auth import Role
from kefu_shared.contracts.feedback import SURVEY_ANSWERS_TOPIC, SurveyAnswerSubmitted
from kefu_shared.envelope import Envelope
from kefu_shared.testing import eventually, read_topic
from pymongo import AsyncMongoClient

pytestmark = pytest.mark.integration

NOW = at(10, 12)


def resolved_inquiry(
    inquiry_id: str, customer: str, resolved: Any, *, language: str = "zh"
) -> InquiryScript:
    opened = resolved - timedelta(minutes=30)
    return (
        InquiryScript(inquiry_id, customer, "chat", "product", language=language)
        .opened(opened, "酒的年份是哪一年")
        .reply(opened + timedelta(minutes=1), "A1", 60, first=True)
        .resolved(resolved, "A1")
    )


async def produce_scripts(bootstrap: str, settings: Any, *scripts: InquiryScript) -> None:
    published = Published()
    for script in scripts:
        for event in script.events:
            published.add(event, source="inquiry", time=event.occurred_at)
    await produce_all(bootstrap, settings, published.items)


async def record(client: Any, survey_id: str) -> dict[str, Any] | None:
    r = await client.get(f"/surveys/{survey_id}/record")
    return r.json() if r.status_code == 200 else None


async def test_each_case_is_surveyed_once_and_only_customers_who_may_be_asked_are(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    app = create_app(settings, clock=Clock(NOW))
    async with running(app) as client:
        r = await client.put("/customers/c-opt/survey-preference", json={"opted_out": True})
        assert r.status_code == 200
        assert r.json()["opted_out"] is True

        fresh = resolved_inquiry("Q1", "c1", NOW - timedelta(hours=1), language="en")
        # Reopened and resolved again, and redelivered: still one survey.
        fresh.reopened(NOW - timedelta(minutes=50), "A1").resolved(
            NOW - timedelta(minutes=40), "A1"
        )
        again_soon = resolved_inquiry("Q2", "c1", NOW - timedelta(minutes=20))
        opted_out = resolved_inquiry("Q3", "c-opt", NOW - timedelta(hours=2))
        too_old = resolved_inquiry("Q4", "c4", NOW - timedelta(days=10))
        await produce_scripts(kafka_bootstrap, settings, fresh, fresh, opted_out, too_old)

        async def decided(*ids: str) -> bool:
            return all([await record(client, i) for i in ids])

        await eventually(lambda: decided("inquiry-Q1", "inquiry-Q3", "inquiry-Q4"), timeout=30)
        await produce_scripts(kafka_bootstrap, settings, again_soon)
        case = case_closed("AS-9", "c9", NOW - timedelta(hours=3), email="li.lei@example.com")
        p = Published()
        p.add(case, source="aftersales")
        await produce_all(kafka_bootstrap, settings, p.items)
        await eventually(lambda: decided("inquiry-Q2", "aftersales-AS-9"), timeout=30)

        statuses = {
            i: ((await record(client, i)) or {}).get("status")
            for i in ("inquiry-Q1", "inquiry-Q2", "inquiry-Q3", "inquiry-Q4", "aftersales-AS-9")
        }
        assert statuses == {
            "inquiry-Q1": "invited",
            "inquiry-Q2": "skipped",
            "inquiry-Q3": "skipped",
            "inquiry-Q4": "skipped",
            "aftersales-AS-9": "invited",
        }
        reasons = [((await record(client, f"inquiry-Q{n}")) or {})["reason"] for n in (2, 3, 4)]
        assert reasons == ["recently_surveyed", "opted_out", "too_old"]

        requests = await topic_json(
            kafka_bootstrap, settings, topics.NOTIFICATION_REQUESTS, expect=2, settle=1.5
        )
        by_key = {r["data"]["idempotency_key"]: r["data"] for r in requests}
        assert sorted(by_key) == ["aftersales-AS-9", "inquiry-Q1"]
        q1 = by_key["inquiry-Q1"]
        token = app.state.deps.links.token("inquiry-Q1")
        assert q1["parameters"]["survey_url"].endswith(f"/surveys/inquiry-Q1?token={token}")
        # No address in inquiry events: the notifier addresses it from its contact card, on
        # the channel the customer wrote on (chat -> app push).
        assert (q1["language"], q1["preferred_channel"], q1["requested_by"]) == (
            "en",
            "app_push",
            "feedback",
        )
        assert not any(q1["recipient"].values())
        as9 = by_key["aftersales-AS-9"]
        assert as9["recipient"]["email"] == "li.lei@example.com"
        assert as9["preferred_channel"] == "email"

        # The notifier reports: Q1 sent (twice) -> one survey.sent; AS-9 suppressed because the
        # customer opted out of surveys there -> undeliverable, and no survey for them again.
        reports = Published()
        reports.add(delivery("sent", "inquiry-Q1", "c1", NOW), source="notifier")
        reports.again(0)
        reports.add(delivery("suppressed", "aftersales-AS-9", "c9", NOW), source="notifier")
        await produce_all(kafka_bootstrap, settings, reports.items)

        async def reported() -> bool:
            q1 = await record(client, "inquiry-Q1")
            as9 = await record(client, "aftersales-AS-9")
            return bool(
                q1 and as9 and q1["status"] == "delivered" and as9["status"] == "undeliverable"
            )

        await eventually(reported, timeout=30)
        pref = (await client.get("/customers/c9/survey-preference")).json()
        assert pref["opted_out"] is True
        events = await topic_json(
            kafka_bootstrap, settings, topics.FEEDBACK_EVENTS, expect=1, settle=1.5
        )
    assert [(e["type"], e["data"]["survey_id"]) for e in events] == [("survey.sent", "inquiry-Q1")]
    assert events[0]["data"]["notification_channel"] == "webhook"


async def test_answers_arrive_through_the_link_or_the_topic_and_bad_ones_are_refused(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
) -> None:
    settings = make_settings(service_overrides, unique)
    app = create_app(settings, clock=Clock(NOW))
    links = app.state.deps.links
    async with running(app, role=None) as client:
        await produce_scripts(
            kafka_bootstrap,
            settings,
            resolved_inquiry("A1", "c1", NOW - timedelta(hours=1)),
            resolved_inquiry("A2", "c2", NOW - timedelta(hours=1)),
            resolved_inquiry("A3", "c3", NOW - timedelta(days=30)),  # too old: skipped
        )

        async def created() -> bool:
            for n in (1, 2, 3):
                sid = f"inquiry-A{n}"
                r = await client.get(f"/surveys/{sid}", params={"token": links.token(sid)})
                if r.status_code != 200:
                    return False
            return True

        await eventually(created, timeout=30)
        url = "/surveys/inquiry-A1"
        token = links.token("inquiry-A1")
        view = (await client.get(url, params={"token": token})).json()
        assert view["state"] == "open"
        assert len(view["dimensions"]) == 5
        page = await client.get(url, params={"token": token}, headers={"Accept": "text/html"})
        assert "服务满意度调查" in page.text
        assert 'name="product_quality"' in page.text

        wrong = await client.get(url, params={"token": "0" * 32})
        assert wrong.status_code == 403
        assert "token" in wrong.json()["detail"]
        ghost = links.token("inquiry-nope")
        missing = await client.get("/surveys/inquiry-nope", params={"token": ghost})
        assert missing.status_code == 404
        assert "survey_id" in missing.json()["detail"]

        async def answer(body: dict[str, Any], sid: str = "inquiry-A1") -> Any:
            return await client.post(
                f"/surveys/{sid}/answers", json={"token": links.token(sid), **body}
            )

        bad_overall = await answer({"overall": 6})
        assert bad_overall.status_code == 422
        assert "overall" in bad_overall.text
        bad_dimension = await answer({"overall": 4, "ratings": {"speed": 3}})
        assert bad_dimension.status_code == 422
        assert "speed" in bad_dimension.text
        too_long = await answer({"overall": 4, "comment": "x" * 2001})
        assert too_long.status_code == 422
        assert "comment" in too_long.text
        skipped = await answer({"overall": 4}, sid="inquiry-A3")
        assert skipped.status_code == 409
        assert "not sent" in skipped.text

        body = {
            "overall": 1,
            "ratings": {"service_efficiency": 1, "user_experience": 2},
            "comment": "卡号 6222 0212 3456 7890 123 退款还没到",
        }
        first = await answer(body)
        assert first.status_code == 201
        assert first.json()["state"] == "answered"
        same = await answer(body)
        assert same.status_code == 200
        changed = await answer({**body, "overall": 5})
        assert changed.status_code == 409
        assert "already answered" in changed.text

        # A phone follow-up reports its answer on the topic: recorded, and so are bad ones'
        # reasons (in the DLQ).
        topic_answer = SurveyAnswerSubmitted(
            survey_id="inquiry-A2",
            submission_id="call-77",
            overall=5,
            ratings={"product_quality": 5},
            collected_by="phone_follow_up",
            answered_at=NOW,
        )
        p = Published()
        p.add(topic_answer, source="call-centre")
        p.again(0)
        p.add(
            topic_answer.model_copy(
                update={"survey_id": "inquiry-unknown", "submission_id": "call-78"}
            ),
            source="call-centre",
        )
        await produce_all(kafka_bootstrap, settings, p.items)
        bad = json.loads(Envelope.wrap(topic_answer, source="call-centre").kafka_body())
        bad["data"]["overall"] = 9
        await produce_raw(
            kafka_bootstrap, settings, SURVEY_ANSWERS_TOPIC, "inquiry-A2", json.dumps(bad).encode()
        )

        async def answered_by_phone() -> bool:
            sid = "inquiry-A2"
            r = await client.get(f"/surveys/{sid}", params={"token": links.token(sid)})
            return bool(r.json()["state"] == "answered")

        await eventually(answered_by_phone, timeout=30)

        stored = (await client.get("/surveys/inquiry-A1/record", headers=auth_header())).json()
        assert "6222" not in stored["answer"]["comment"]
        assert "[card number removed]" in stored["answer"]["comment"]
        # Without a staff login only the link's own routes answer.
        assert (await client.get("/surveys/inquiry-A1/record")).status_code == 401

        dlq = await read_topic(
            kafka_bootstrap, settings.topic(topics.dead_letter_topic("feedback")), expect=2
        )
        reasons = sorted(r.headers["x-dlq-reason"] for r in dlq)
        assert any("survey_id: no survey 'inquiry-unknown'" in r for r in reasons), reasons
        assert any("overall" in r for r in reasons), reasons
        events = await topic_json(
            kafka_bootstrap, settings, topics.FEEDBACK_EVENTS, expect=3, settle=1.0
        )
    kinds = sorted((e["type"], e["data"]["survey_id"]) for e in events)
    assert kinds == [
        ("survey.answered", "inquiry-A1"),
        ("survey.answered", "inquiry-A2"),
        ("survey.follow_up_raised", "inquiry-A1"),
    ]
    follow_up = next(e for e in events if e["type"] == "survey.follow_up_raised")["data"]
    assert follow_up["low_dimensions"] == ["overall", "service_efficiency", "user_experience"]
    assert follow_up["route"] == "supervisor"
    by_phone = next(e for e in events if e["data"]["survey_id"] == "inquiry-A2")["data"]
    assert by_phone["source"] == "topic:phone_follow_up"


async def test_bad_events_and_queries_are_refused_naming_what_is_wrong(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    app = create_app(settings, clock=Clock(NOW))
    async with running(app) as client:
        script = resolved_inquiry("B1", "c1", NOW - timedelta(hours=1))
        resolved = json.loads(Envelope.wrap(script.events[-1], source="inquiry").kafka_body())
        del resolved["data"]["opened_at"]
        await produce_raw(
            kafka_bootstrap, settings, topics.INQUIRY_EVENTS, "B1", json.dumps(resolved).encode()
        )
        await produce_raw(kafka_bootstrap, settings, topics.ORDERS_EVENTS, "O1", b"not json")

        checks: list[tuple[str, str, dict[str, str], str]] = [
            ("2026-03-09", "2026-03-02", {}, "to: must be after from"),
            ("2026-03-02", "2026-03-09", {"category": "gossip"}, "category"),
            ("last week", "2026-03-09", {}, "from"),
            ("2026-03-02", "2026-03-09", {"channel": "fax"}, "channel"),
            ("2025-01-01", "2026-03-09", {}, "at most 400 days"),
        ]
        for start, end, extra, needle in checks:
            r = await client.get("/kpis", params={"from": start, "to": end, **extra})
            assert r.status_code == 422, (start, end, extra, r.text)
            assert needle in r.text, (start, end, extra, r.text)
        r = await client.post("/survey-rounds", json={"round_id": "R", "sample_size": 0})
        assert r.status_code == 422
        assert "sample_size" in r.text
        r = await client.get("/surveys/inquiry-B1/record")
        assert r.status_code == 404
        agent = auth_header(Role.AGENT, "agent-7")
        r = await client.get(
            "/kpis", params={"from": "2026-03-02", "to": "2026-03-09"}, headers=agent
        )
        assert r.status_code == 403

        # Read while the service runs: its event consumers may hold a fetch to gather events.
        dlq = await read_topic(
            kafka_bootstrap, settings.topic(topics.dead_letter_topic("feedback")), expect=2
        )
    reasons = [r.headers["x-dlq-reason"] for r in dlq]
    assert any("opened_at" in r for r in reasons), reasons
    assert any(r.headers["x-original-topic"].endswith(topics.ORDERS_EVENTS) for r in dlq)


async def test_a_survey_round_invites_a_sample_once_even_when_a_restart_repeats_work(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    tmp_path: Path,
) -> None:
    settings = make_settings(service_overrides, unique)
    clock = Clock(NOW)
    customers = [f"r{n}" for n in range(1, 6)]
    scripts = [
        InquiryScript(f"R{n}", c, "chat", "product").opened(NOW - timedelta(days=n * 10), "在吗")
        for n, c in enumerate(customers, start=1)
    ]
    app = create_app(settings, clock=clock)
    async with running(app) as client:
        await client.put("/customers/r3/survey-preference", json={"opted_out": True})
        await produce_scripts(kafka_bootstrap, settings, *scripts)
        db = mongo_client[settings.mongodb_database]

        async def opened() -> bool:
            return await db["facts"].count_documents({"kind": "opened"}) == 5

        await eventually(opened, timeout=30)
        body = {"round_id": "2026-Q1", "sample_size": 3, "lookback_days": 90}
        r = await client.post("/survey-rounds", json=body)
        assert r.status_code == 201, r.text
        started = r.json()
        assert (started["population"], started["sampled"]) == (5, 3)
        assert (await client.post("/survey-rounds", json=body)).json() == started
        conflict = await client.post("/survey-rounds", json={**body, "sample_size": 4})
        assert conflict.status_code == 409
        assert "round_id" in conflict.text

        async def done() -> bool:
            r = await client.get("/survey-rounds/2026-Q1")
            return bool(r.json()["status"] == "done")

        await eventually(done, timeout=30)
        requests = await topic_json(
            kafka_bootstrap, settings, topics.NOTIFICATION_REQUESTS, expect=3, settle=1.0
        )
    invited = sorted(r["data"]["customer_id"] for r in requests)
    assert len(invited) == 3
    assert "r3" not in invited

    # A process that died after inviting but before marking it: the round still lists a
    # customer as pending. The next process finishes the round without inviting anyone twice.
    db = mongo_client[settings.mongodb_database]
    await db["survey_rounds"].update_one(
        {"_id": "2026-Q1"}, {"$set": {"pending": [invited[0]], "status": "issuing"}}
    )
    app2 = create_app(settings, clock=clock)
    async with running(app2) as client:
        await eventually(done, timeout=30)
        requests = await topic_json(
            kafka_bootstrap, settings, topics.NOTIFICATION_REQUESTS, expect=4, timeout=3
        )
        events = await topic_json(kafka_bootstrap, settings, topics.FEEDBACK_EVENTS, expect=1)
    assert len(requests) == 3
    assert events[0]["type"] == "survey.round_started"
    assert (events[0]["data"]["sampled"], events[0]["data"]["population"]) == (3, 5)
