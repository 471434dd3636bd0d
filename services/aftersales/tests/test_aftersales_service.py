"""The after-sales service on the real broker and store: intake over HTTP and from inquiries,
policy review, the state machine with progress notices, supervisors, follow-up on close,
negative reviews with deadlines that survive a restart, and every kind of bad input."""

from __future__ import annotations

import json
from typing import Any

import httpx
from aftersales_testkit import (
    T0,
    Clock,
    events,
    make_settings,
    notifications,
    order_event,
    publish,
    publish_order,
    request_body,
    review,
    types,
)
from kefu_aftersales.bootstrap import create_app
from kefu_local.pytest_plugin import auth_header, running
from kefu_shared import topics
from kefu_shared.auth import Role
from kefu_shared.contracts.inquiry import InquiryClassified, InquiryReceived
from kefu_shared.envelope import Envelope
from kefu_shared.testing import eventually, produce, read_topic
from kefu_shared.topics import Channel
from pymongo import AsyncMongoClient

AGENT = auth_header(Role.AGENT, "agent-li")
SUPERVISOR = auth_header(Role.SUPERVISOR, "boss-wang")


async def step(client: httpx.AsyncClient, case_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/cases/{case_id}/transitions", json=body, headers=AGENT)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_return_goes_from_request_to_refund_and_the_customer_hears_of_every_step(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-happy"))
        response = await client.post("/cases", json=request_body("O-happy"), headers=AGENT)
        assert response.status_code == 201, response.text
        case = response.json()
        case_id = case["id"]
        assert case["state"] == "awaiting_return_parcel"
        assert case["decision"]["verdict"] == "approved"
        assert case["decision"]["rule"] == "within_policy"
        assert case["decision"]["return_shipping_paid_by"] == "shop"
        assert case["decision"]["refund_amount_cents"] == 39_800
        assert case["contact"] == {
            "email": "w***@example.com",
            "phone": "138****5678",
            "wechat_openid": None,
            "marketplace_im_id": None,
        }

        parcel = await client.post(
            f"/cases/{case_id}/return-parcel",
            json={"carrier": "sf", "tracking_number": "SF100200300"},
        )
        assert parcel.status_code == 200, parcel.text
        await step(client, case_id, to="received")
        await step(
            client,
            case_id,
            to="inspected",
            inspection_passed=True,
            inspection_result="瓶盖密封不良",
        )
        refunded = await step(client, case_id, to="refunded", refund_reference="PAY-77")
        assert refunded["refund"]["amount_cents"] == 39_800
        closed = await step(client, case_id, to="closed", note="客户确认收到退款")
        assert closed["state"] == "closed"
        assert closed["resolution"] == "refunded"
        assert [h["to_state"] for h in closed["history"]] == [
            "requested",
            "under_review",
            "approved",
            "awaiting_return_parcel",
            "received",
            "inspected",
            "refunded",
            "closed",
        ]

        got = await events(kafka_bootstrap, settings, expect=12)
        assert types(got) == [
            "aftersales.case_opened",
            "aftersales.state_changed",
            "aftersales.decision_made",
            "aftersales.state_changed",
            "aftersales.state_changed",
            "aftersales.return_parcel_sent",
            "aftersales.state_changed",
            "aftersales.state_changed",
            "aftersales.state_changed",
            "aftersales.refund_issued",
            "aftersales.state_changed",
            "aftersales.case_closed",
        ]
        assert {e["subject"] for e in got} == {case_id}
        assert got[5]["data"]["tracking_number"] == "SF100200300"
        assert got[9]["data"]["amount_cents"] == 39_800
        assert got[9]["data"]["refund_reference"] == "PAY-77"
        follow_up = got[11]["data"]
        assert follow_up["customer_id"] == "cust-1"
        assert follow_up["kind"] == "return"
        assert follow_up["channel"] == "chat"
        assert follow_up["language"] == "zh-CN"
        assert follow_up["resolution"] == "refunded"
        assert follow_up["refunded_amount_cents"] == 39_800
        assert follow_up["contact"]["email"] == "wang.fang@example.com"
        assert len({e["correlation_id"] for e in got}) == 1

        notices = await notifications(kafka_bootstrap, settings, expect=7)
        assert [n["data"]["template"] for n in notices] == [
            "aftersales_requested",
            "aftersales_approved",
            "aftersales_awaiting_return_parcel",
            "aftersales_received",
            "aftersales_inspected",
            "aftersales_refunded",
            "aftersales_closed",
        ]
        for notice in notices:
            data = notice["data"]
            assert data["purpose"] == "aftersales_progress"
            assert data["customer_id"] == "cust-1"
            assert data["parameters"]["case_id"] == case_id
            assert data["parameters"]["order_id"] == "O-happy"
            assert data["preferred_channel"] == "app_push"
            assert data["recipient"]["email"] == "wang.fang@example.com"
        assert notices[2]["data"]["parameters"]["return_address"].startswith("kefu returns")
        assert notices[4]["data"]["parameters"]["result"] == "瓶盖密封不良"
        assert notices[5]["data"]["parameters"]["amount"] == "398.00"
        assert notices[5]["data"]["parameters"]["currency"] == "CNY"
        assert len({n["data"]["idempotency_key"] for n in notices}) == 7

        metrics = (await client.get("/metrics")).text
        assert 'kefu_aftersales_refunded_cents_total{currency="CNY"} 39800.0' in metrics
        assert (
            'kefu_aftersales_decisions_total{decided_by="policy",kind="return",'
            'rule="within_policy",verdict="approved"} 1.0'
        ) in metrics


async def test_the_same_request_id_twice_opens_one_case(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-idem"))
        body = request_body("O-idem", request_id="shop-req-1")
        first = await client.post("/cases", json=body)
        again = await client.post("/cases", json=body)
        assert first.status_code == 201
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        listed = (await client.get("/cases", params={"order_id": "O-idem"})).json()["items"]
        assert len(listed) == 1

        spec = (await client.get("/asyncapi.json")).json()
        addresses = {c["address"] for c in spec["channels"].values()}
        assert {
            settings.topic(topics.COMMERCE_ORDERS),
            settings.topic(topics.INQUIRY_EVENTS),
            settings.topic(topics.MARKETPLACE_REVIEWS),
            settings.topic(topics.AFTERSALES_EVENTS),
        } <= addresses


async def test_an_inquiry_classified_as_after_sales_opens_a_case_an_agent_completes(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-inq"))
        common = {
            "customer_id": "cust-1",
            "channel": Channel.CHAT,
            "category": "after_sales",
            "occurred_at": T0,
        }
        received = InquiryReceived(
            inquiry_id="inq-1",
            message_id="m-1",
            message_channel=Channel.CHAT,
            opened=True,
            content="收到的酒瓶破损了，漏了一半，我要退货",
            order_reference="O-inq",
            language="zh",
            sent_at=T0,
            **common,
        )
        classified = InquiryClassified(
            inquiry_id="inq-1", confidence=0.9, language="zh", needs_human=False, **common
        )
        # Another inquiry about something else opens nothing.
        other = InquiryClassified(
            inquiry_id="inq-2",
            confidence=0.9,
            language="zh",
            needs_human=False,
            **{**common, "category": "logistics"},
        )
        for event in (received, classified, other):
            await publish(kafka_bootstrap, settings, event, correlation_id="journey-1")

        async def opened() -> bool:
            items = (await client.get("/cases", params={"customer_id": "cust-1"})).json()["items"]
            return len(items) == 1

        await eventually(opened)
        [case] = (await client.get("/cases", params={"customer_id": "cust-1"})).json()["items"]
        assert case["origin"] == "inquiry"
        assert case["inquiry_id"] == "inq-1"
        assert case["state"] == "requested"
        assert case["needs_completion"]
        assert case["order_id"] == "O-inq"
        assert case["kind"] == "return"
        assert case["reason"] == "damaged_in_transit"
        assert case["description"].startswith("收到的酒瓶破损了")

        # A plain step cannot skip the agent's completion.
        skipped = await client.post(
            f"/cases/{case['id']}/transitions", json={"to": "under_review"}, headers=AGENT
        )
        assert skipped.status_code == 409
        assert "completion" in skipped.json()["detail"]

        completion = request_body(
            "O-inq", reason="damaged_in_transit", lines=[{"sku": "WINE-1983", "quantity": 1}]
        )
        done = await client.post(f"/cases/{case['id']}/completion", json=completion, headers=AGENT)
        assert done.status_code == 200, done.text
        assert done.json()["state"] == "awaiting_return_parcel"
        assert not done.json()["needs_completion"]
        assert done.json()["history"][1]["actor_id"] == "agent-li"

        got = await events(kafka_bootstrap, settings, expect=5)
        assert types(got) == [
            "aftersales.case_opened",
            "aftersales.state_changed",
            "aftersales.decision_made",
            "aftersales.state_changed",
            "aftersales.state_changed",
        ]
        assert got[0]["data"]["needs_completion"]
        assert got[0]["data"]["origin"] == "inquiry"
        assert got[0]["correlation_id"] == "journey-1"
        assert got[2]["correlation_id"] == "journey-1"  # the journey goes on after completion
        notices = await notifications(kafka_bootstrap, settings, expect=3)
        assert [n["data"]["template"] for n in notices] == [
            "aftersales_requested",
            "aftersales_approved",
            "aftersales_awaiting_return_parcel",
        ]


async def test_the_policy_rejects_with_its_rule_and_a_supervisor_decides_what_needs_one(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = make_settings(service_overrides, unique)
    expensive = [
        {
            "sku": "CAM-1",
            "name": "camera",
            "category": "electronics",
            "quantity": 1,
            "unit_price_cents": 450_000,
            "catalogue_unit_price_cents": 450_000,
        },
    ]
    async with running(create_app(settings, clock=Clock())) as client:
        await publish_order(
            kafka_bootstrap, settings, client, order_event("O-late", delivered_days_ago=9)
        )
        await publish_order(
            kafka_bootstrap, settings, client, order_event("O-cam", lines=expensive)
        )
        late = await client.post(
            "/cases",
            json=request_body("O-late", reason="changed_mind", language="en"),
            headers=AGENT,
        )
        assert late.status_code == 201, late.text
        assert late.json()["state"] == "rejected"
        assert late.json()["decision"]["rule"] == "changed_mind_window_7_days"

        camera = request_body("O-cam", lines=[{"sku": "CAM-1", "quantity": 1}])
        big = (await client.post("/cases", json=camera, headers=AGENT)).json()
        assert big["state"] == "under_review"
        assert big["decision"]["verdict"] == "needs_supervisor"
        assert big["decision"]["rule"] == "supervisor_above_2000"

        refused = await client.post(
            f"/cases/{big['id']}/decision",
            json={"verdict": "approved", "reason": "VIP"},
            headers=AGENT,
        )
        assert refused.status_code == 403
        approved = await client.post(
            f"/cases/{big['id']}/decision",
            json={"verdict": "approved", "reason": "镜头确有质量问题，已核实"},
            headers=SUPERVISOR,
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "awaiting_return_parcel"
        assert approved.json()["decision"]["decided_by"] == "supervisor"
        assert approved.json()["decision"]["supervisor_id"] == "boss-wang"
        assert approved.json()["decision"]["rule"] == "supervisor_approval"

        decisions = await events(
            kafka_bootstrap, settings, expect=10, type="aftersales.decision_made"
        )
        # Two cases: each keeps its order on its partition, not across partitions.
        per_case: dict[str, list[tuple[str, str]]] = {}
        for d in decisions:
            per_case.setdefault(d["subject"], []).append((d["data"]["verdict"], d["data"]["rule"]))
        assert per_case == {
            late.json()["id"]: [("rejected", "changed_mind_window_7_days")],
            big["id"]: [
                ("needs_supervisor", "supervisor_above_2000"),
                ("approved", "supervisor_approval"),
            ],
        }
        [rejected] = [d["data"] for d in decisions if d["data"]["verdict"] == "rejected"]
        assert rejected["reason"] == "the 7-day window for returns without a reason has passed"
        notices = await notifications(kafka_bootstrap, settings, expect=5)
        per_case_notices: dict[str, list[str]] = {}
        for n in notices:
            case_of = n["data"]["parameters"]["case_id"]
            per_case_notices.setdefault(case_of, []).append(n["data"]["template"])
        assert per_case_notices == {
            late.json()["id"]: ["aftersales_requested", "aftersales_rejected"],
            big["id"]: [
                "aftersales_requested",
                "aftersales_approved",
                "aftersales_awaiting_return_parcel",
            ],
        }
        rejection = next(n for n in notices if n["data"]["template"] == "aftersales_rejected")
        assert rejection["data"]["language"] == "en"
        assert "7-day window" in rejection["data"]["parameters"]["reason"]

    audit = await mongo_client[settings.mongodb_database]["audit_log"].find({}).to_list()
    assert [(a["actor"], a["role"], a["action"]) for a in audit] == [
        ("boss-wang", "supervisor", "aftersales.supervisor_decision")
    ]
    assert audit[0]["subject"] == f"case:{big['id']}"
    assert audit[0]["reason"] == "镜头确有质量问题，已核实"


async def test_illegal_steps_are_refused_and_a_supervisor_override_is_audited(
    service_overrides: dict[str, Any],
    unique: str,
    kafka_bootstrap: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-sm"))
        body = request_body("O-sm", kind="exchange", reason="wrong_item")
        case_id = (await client.post("/cases", json=body, headers=AGENT)).json()["id"]

        too_early = await client.post(
            f"/cases/{case_id}/transitions", json={"to": "inspected"}, headers=AGENT
        )
        assert too_early.status_code == 409
        assert too_early.json()["detail"] == (
            f"case {case_id} (exchange) cannot go from awaiting_return_parcel to inspected; "
            "allowed next: closed, received"
        )
        not_for_exchanges = await client.post(
            f"/cases/{case_id}/transitions", json={"to": "refunded"}, headers=AGENT
        )
        assert not_for_exchanges.status_code == 409
        agent_override = await client.post(
            f"/cases/{case_id}/transitions",
            json={"to": "received", "override_reason": "trust me"},
            headers=AGENT,
        )
        assert agent_override.status_code == 403
        assert "override_reason" in agent_override.json()["detail"]

        await step(client, case_id, to="received")
        failed = {"inspection_passed": False, "inspection_result": "外包装有使用痕迹"}
        await step(client, case_id, to="inspected", **failed)
        blocked = await client.post(
            f"/cases/{case_id}/transitions",
            json={"to": "exchanged", "carrier": "sf", "tracking_number": "SF1"},
            headers=AGENT,
        )
        assert blocked.status_code == 409
        assert "did not pass inspection" in blocked.json()["detail"]

        no_tracking = await client.post(
            f"/cases/{case_id}/transitions",
            json={"to": "exchanged", "override_reason": "客户为老客户，特批换货"},
            headers=SUPERVISOR,
        )
        assert no_tracking.status_code == 422
        assert no_tracking.json()["detail"][0]["loc"] == ["body", "carrier"]

        forced = await client.post(
            f"/cases/{case_id}/transitions",
            json={
                "to": "exchanged",
                "carrier": "sf",
                "tracking_number": "SF900",
                "override_reason": "客户为老客户，特批换货",
            },
            headers=SUPERVISOR,
        )
        assert forced.status_code == 200, forced.text
        last = forced.json()["history"][-1]
        assert last["override"]
        assert last["actor_id"] == "boss-wang"
        assert last["reason"] == "客户为老客户，特批换货"

        got = await events(kafka_bootstrap, settings, expect=9)
        assert len(got) == 9
        assert types(got)[-2:] == ["aftersales.state_changed", "aftersales.exchange_shipped"]
        assert got[-2]["data"]["override"]
        assert got[-2]["data"]["reason"] == "客户为老客户，特批换货"
        assert got[-1]["data"]["tracking_number"] == "SF900"
        notices = await notifications(kafka_bootstrap, settings, expect=6)
        exchanged = notices[-1]["data"]
        assert exchanged["template"] == "aftersales_exchanged"
        assert exchanged["parameters"]["tracking_number"] == "SF900"

        closed = await step(client, case_id, to="closed")
        reopened = await client.post(
            f"/cases/{case_id}/transitions",
            json={"to": "received", "override_reason": "again"},
            headers=SUPERVISOR,
        )
        assert reopened.status_code == 409
        assert "closed cases are final" in reopened.json()["detail"]
        assert closed["resolution"] == "exchanged"
        metrics = (await client.get("/metrics")).text
        assert (
            'kefu_aftersales_transitions_total{kind="exchange",override="true",state="exchanged"}'
            " 1.0"
        ) in metrics

    audit = await mongo_client[settings.mongodb_database]["audit_log"].find({}).to_list()
    assert [(a["action"], a["actor"], a["before"], a["after"]["state"]) for a in audit] == [
        ("aftersales.override_transition", "boss-wang", {"state": "inspected"}, "exchanged")
    ]


async def test_a_refund_cannot_exceed_what_was_approved_and_refunded_units_cannot_come_back(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-money"))
        body = request_body("O-money", kind="refund_only", reason="damaged_in_transit")
        case = (await client.post("/cases", json=body, headers=AGENT)).json()
        assert case["state"] == "approved"
        assert case["decision"]["return_shipping_paid_by"] == "none"
        too_much = await client.post(
            f"/cases/{case['id']}/transitions",
            json={"to": "refunded", "amount_cents": 39_801},
            headers=AGENT,
        )
        assert too_much.status_code == 422
        assert too_much.json()["detail"][0]["loc"] == ["body", "amount_cents"]
        partial = await step(client, case["id"], to="refunded", amount_cents=20_000)
        assert partial["refund"]["amount_cents"] == 20_000
        await step(client, case["id"], to="closed")

        # 2 of the 6 bottles were refunded: at most 4 can be asked for again.
        again = request_body("O-money", lines=[{"sku": "WINE-1983", "quantity": 5}])
        refused = await client.post("/cases", json=again, headers=AGENT)
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "lines", "0", "quantity"]
        assert "2 already refunded" in refused.json()["detail"][0]["msg"]
        four = request_body("O-money", lines=[{"sku": "WINE-1983", "quantity": 4}])
        assert (await client.post("/cases", json=four, headers=AGENT)).status_code == 201


async def test_bad_requests_are_refused_naming_the_field_or_the_conflicting_case(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings, clock=Clock())) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-bad"))
        await publish_order(
            kafka_bootstrap, settings, client, order_event("O-transit", kind="shipped")
        )
        good = request_body("O-bad")
        cases: dict[str, tuple[dict[str, Any], list[str], str]] = {
            "unknown order": ({**good, "order_id": "O-nope"}, ["order_id"], "unknown order"),
            "not delivered": (
                {**good, "order_id": "O-transit"},
                ["order_id"],
                "is shipped, not delivered",
            ),
            "other customer": ({**good, "customer_id": "cust-2"}, ["customer_id"], "another"),
            "line not in order": (
                {**good, "lines": [{"sku": "TEA-9", "quantity": 1}]},
                ["lines", "0", "sku"],
                "not a line of order",
            ),
            "too many": (
                {**good, "lines": [{"sku": "MUG-1", "quantity": 2}]},
                ["lines", "0", "quantity"],
                "only 1 bought",
            ),
            "unknown kind": ({**good, "kind": "gift"}, ["kind"], "Input should be"),
            "review kind": ({**good, "kind": "negative_review"}, ["kind"], "marketplace"),
            "no customer": (
                {k: v for k, v in good.items() if k != "customer_id"},
                ["customer_id"],
                "required",
            ),
            "no lines": ({**good, "lines": []}, ["lines"], "at least 1"),
            "zero quantity": (
                {**good, "lines": [{"sku": "MUG-1", "quantity": 0}]},
                ["lines", 0, "quantity"],
                "greater than or equal to 1",
            ),
            "evidence": ({**good, "evidence": ["not a link"]}, ["evidence", 0], "URL"),
            "unknown field": ({**good, "refund_to": "alipay"}, ["refund_to"], "Extra inputs"),
        }
        for name, (body, loc, message) in cases.items():
            response = await client.post("/cases", json=body, headers=AGENT)
            assert response.status_code == 422, (name, response.text)
            detail = response.json()["detail"][0]
            assert detail["loc"] == ["body", *loc], (name, detail)
            assert message in detail["msg"], (name, detail)
        not_json = await client.post(
            "/cases", content=b"{oops", headers={**AGENT, "content-type": "application/json"}
        )
        assert not_json.status_code == 422

        first = await client.post("/cases", json=good, headers=AGENT)
        assert first.status_code == 201
        second = await client.post("/cases", json={**good, "kind": "exchange"}, headers=AGENT)
        assert second.status_code == 409
        assert second.json()["detail"] == (
            f"lines: 'WINE-1983' of order 'O-bad' already has an open case {first.json()['id']}"
        )
        other_line = {**good, "lines": [{"sku": "MUG-1", "quantity": 1}]}
        assert (await client.post("/cases", json=other_line, headers=AGENT)).status_code == 201

        assert (await client.get("/cases/AS-UNKNOWN")).status_code == 404
        missing = await client.post(
            "/cases/AS-UNKNOWN/transitions", json={"to": "received"}, headers=AGENT
        )
        assert missing.status_code == 404
        unknown_state = await client.post(
            f"/cases/{first.json()['id']}/transitions", json={"to": "lost"}, headers=AGENT
        )
        assert unknown_state.status_code == 422
        no_token = await client.post("/cases", json=good, headers={"Authorization": ""})
        assert no_token.status_code == 401

        metrics = (await client.get("/metrics")).text
        assert 'kefu_aftersales_requests_refused_total{reason="duplicate_case"} 1.0' in metrics
        assert 'kefu_aftersales_requests_refused_total{reason="unknown_order"} 1.0' in metrics


async def test_bad_messages_go_to_the_dead_letter_topic_with_the_reason(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    async with running(create_app(settings, clock=Clock())) as client:
        orders_topic = settings.topic(topics.COMMERCE_ORDERS)
        good_order = json.loads((await _envelope_body(order_event("O-dlq"))).decode())
        no_delivery = json.loads(json.dumps(good_order))
        no_delivery["data"]["delivered_at"] = None
        wrong_type = {**good_order, "type": "commerce.order_cancelled"}
        await produce(
            kafka_bootstrap,
            orders_topic,
            [b"{not json", json.dumps(no_delivery).encode(), json.dumps(wrong_type).encode()],
            key=b"O-dlq",
        )
        reviews_topic = settings.topic(topics.MARKETPLACE_REVIEWS)
        six_stars = json.loads((await _envelope_body(review("r-6", rating=2))).decode())
        six_stars["data"]["rating"] = 6
        await produce(kafka_bootstrap, reviews_topic, [json.dumps(six_stars).encode()], key=b"r")
        inquiry_topic = settings.topic(topics.INQUIRY_EVENTS)
        broken_inquiry = {
            "id": "e-1",
            "type": "inquiry.classified",
            "version": 1,
            "source": "inquiry",
            "time": T0.isoformat(),
            "subject": "inq-x",
            "correlation_id": "c",
            "data": {"inquiry_id": "inq-x", "category": "after_sales"},
        }
        await produce(
            kafka_bootstrap, inquiry_topic, [json.dumps(broken_inquiry).encode()], key=b"inq-x"
        )
        # Good input after the bad still gets through on every topic.
        await publish(kafka_bootstrap, settings, review("r-ok", rating=1))
        await publish_order(kafka_bootstrap, settings, client, order_event("O-dlq"))
        await events(kafka_bootstrap, settings, expect=2)

        dead = await read_topic(
            kafka_bootstrap, settings.topic(topics.dead_letter_topic("aftersales")), expect=5
        )
        reasons = {
            d.headers["x-original-topic"].rsplit(".", 1)[-1] + ":" + d.headers["x-dlq-reason"]
            for d in dead
        }
        assert len(dead) == 5, reasons
        by_topic = sorted(d.headers["x-original-topic"] for d in dead)
        assert by_topic == sorted([orders_topic] * 3 + [reviews_topic, inquiry_topic])
        joined = " | ".join(reasons)
        assert "delivered_at: required for a delivered event" in joined
        assert "type: expected commerce.order_event v1, got commerce.order_cancelled" in joined
        assert "rating" in joined
        assert "customer_id" in joined  # the classification lacks required fields


async def _envelope_body(data: Any, event_id: str | None = None) -> bytes:
    return Envelope.wrap(data, source="test-adapter", event_id=event_id).kafka_body()


async def test_negative_reviews_open_cases_with_a_reply_deadline_that_fires_once_after_a_restart(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    clock = Clock()
    async with running(create_app(settings, clock=clock)) as client:
        await publish(kafka_bootstrap, settings, review("r-good", rating=4))
        envelope_id = await publish(kafka_bootstrap, settings, review("r-1", rating=2))
        # The same envelope redelivered changes nothing.
        await produce(
            kafka_bootstrap,
            settings.topic(topics.MARKETPLACE_REVIEWS),
            [await _envelope_body(review("r-1", rating=2), event_id=envelope_id)],
            key=b"r-1",
        )
        await publish(kafka_bootstrap, settings, review("r-2", rating=1, text="客服态度差"))
        opened = await events(kafka_bootstrap, settings, expect=4, settle=1.0)
        assert len(opened) == 4
        per_case: dict[str, list[str]] = {}
        for e in opened:
            per_case.setdefault(e["subject"], []).append(e["type"])
        assert (
            list(per_case.values())
            == [["aftersales.case_opened", "aftersales.negative_review_received"]] * 2
        )
        received = next(
            e["data"]
            for e in opened
            if e["type"] == "aftersales.negative_review_received"
            and e["data"]["review_id"] == "r-1"
        )
        assert received["review_id"] == "r-1"
        assert received["rating"] == 2
        assert received["state"] == "awaiting_reply"
        assert received["reply_due_at"].startswith("2026-11-21T09:00:00")
        cases = (await client.get("/cases", params={"kind": "negative_review"})).json()["items"]
        by_review = {c["review"]["review_id"]: c for c in cases}
        assert set(by_review) == {"r-1", "r-2"}

        on_time = await client.post(
            f"/cases/{by_review['r-2']['id']}/review-reply",
            json={"reply": "非常抱歉，已安排专人回访", "explanation": "新客服未按话术回复"},
            headers=AGENT,
        )
        assert on_time.status_code == 200, on_time.text
        assert on_time.json()["state"] == "answered"
        twice = await client.post(
            f"/cases/{by_review['r-2']['id']}/review-reply",
            json={"reply": "again", "explanation": "again"},
            headers=AGENT,
        )
        assert twice.status_code == 409
        metrics = (await client.get("/metrics")).text
        assert 'kefu_aftersales_marketplace_reviews_total{marketplace="taobao",rating="4"} 1.0' in (
            metrics
        )

    # Down while the deadline passes: the next process fires it, once.
    clock.advance(hours=25)
    async with running(create_app(settings, clock=clock)) as client:
        got = await events(kafka_bootstrap, settings, expect=7, settle=1.5)
        overdue = [e for e in got if e["type"] == "aftersales.reply_overdue"]
        assert len(overdue) == 1
        assert overdue[0]["data"]["review_id"] == "r-1"
        assert overdue[0]["subject"] == by_review["r-1"]["id"]
        late = await client.post(
            f"/cases/{by_review['r-1']['id']}/review-reply",
            json={"reply": "抱歉，已为您补发", "explanation": "快递途中挤压破损"},
            headers=AGENT,
        )
        assert late.status_code == 200
        closed = await step(client, by_review["r-1"]["id"], to="closed", note="已补发，客户追评")
        assert closed["resolution"] == "answered"
        got = await events(kafka_bootstrap, settings, expect=11)
        answers = [e["data"] for e in got if e["type"] == "aftersales.negative_review_answered"]
        assert sorted((a["review_id"], a["within_deadline"]) for a in answers) == [
            ("r-1", False),
            ("r-2", True),
        ]
        late_answer = next(a for a in answers if a["review_id"] == "r-1")
        assert late_answer["explanation"] == "快递途中挤压破损"
        assert late_answer["reply_seconds"] == 25 * 3600
        [closing] = [e for e in got if e["type"] == "aftersales.case_closed"]
        assert closing["data"]["kind"] == "negative_review"
        assert closing["data"]["note"] == "已补发，客户追评"
        # Reviews are answered on the marketplace: no progress notices to the customer.
        assert await notifications(kafka_bootstrap, settings, expect=1, timeout=1) == []


async def test_a_finished_case_closes_on_its_own_and_the_follow_up_event_goes_out(
    service_overrides: dict[str, Any], unique: str, kafka_bootstrap: str
) -> None:
    settings = make_settings(service_overrides, unique)
    clock = Clock()
    async with running(create_app(settings, clock=clock)) as client:
        await publish_order(kafka_bootstrap, settings, client, order_event("O-auto"))
        body = request_body("O-auto", kind="refund_only", reason="not_as_described")
        case_id = (await client.post("/cases", json=body, headers=AGENT)).json()["id"]
        refunded = await step(client, case_id, to="refunded")
        assert refunded["next_timer_at"].startswith("2026-11-23T09:00:00")
        clock.advance(hours=71)
        assert (await client.get(f"/cases/{case_id}")).json()["state"] == "refunded"
        clock.advance(hours=2)

        async def closed() -> bool:
            return (await client.get(f"/cases/{case_id}")).json()["state"] == "closed"

        await eventually(closed, timeout=30)
        got = await events(kafka_bootstrap, settings, expect=8, settle=1.0)
        assert types(got)[-2:] == ["aftersales.state_changed", "aftersales.case_closed"]
        follow_up = got[-1]["data"]
        assert follow_up["resolution"] == "refunded"
        assert follow_up["actor_id"] is None
        assert follow_up["note"] == "closed automatically"
        assert follow_up["resolution_seconds"] == 73 * 3600
        notices = await notifications(kafka_bootstrap, settings, expect=4)
        assert notices[-1]["data"]["template"] == "aftersales_closed"
