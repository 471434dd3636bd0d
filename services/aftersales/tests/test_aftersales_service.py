"""The after-sales service on the real broker and store: intake over HTTP and from inquiries,
policy review, the state machine with progress notices, supervisors, follow-up on close,
negative reviews with deadlines that survive a restart, and every kind of bad input."""

from __future__ import annotations

from typing import Any

import httpx
from aftersales_testkit import (
    Clock,
    events,
    make_settings,
    notifications,
    order_event,
    publish_order,
    request_body,
    types,
)
from kefu_aftersales.bootstrap import create_app
from kefu_local.pytest_plugin import auth_header, running
from kefu_shared.auth import Role

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
