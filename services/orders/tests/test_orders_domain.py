"""The order aggregate and its tables, without servers: review and note, couriers, the roster,
the unpaid-order timers, lifecycle steps out of order, refunds and verified changes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from kefu_orders.adapters import tables
from kefu_orders.domain import changes
from kefu_orders.domain import order as domain
from kefu_orders.domain.attribution import Contact
from kefu_orders.domain.changes import Actor, ChangeRequest, LineChange, Proof
from kefu_orders.domain.order import Order, OrderStatus, Rejected, Rules
from kefu_orders.domain.roster import DutyRoster
from kefu_shared.contracts.orders import (
    ActorKind,
    CommerceOrderEvent,
    DeliveryAddress,
    OrderLine,
)
from orders_testkit import ADDRESS, T0, line, order_body, step
from pydantic import ValidationError

RULES = Rules(
    couriers=tables.coverage_table(),
    notes=tables.note_format(),
    note_language="zh-CN",
)
ROSTER = DutyRoster.model_validate(
    {"shifts": [{"agent_id": "duty-1", "start": "08:00", "end": "20:00"}]}
)
AGENT = Actor(ActorKind.AGENT, "agent-9")


def event(kind: str = "placed", **extra: Any) -> CommerceOrderEvent:
    return CommerceOrderEvent.model_validate(order_body(kind, order_id="O-1", **extra))


def placed(**extra: Any) -> Order:
    return domain.first_seen(event(**extra), RULES, ROSTER, [], T0).order


def types(decision: domain.Decision | None) -> list[str]:
    return [e.event_type for e in decision.events] if decision else []


# -- review, note, courier, roster ---------------------------------------------------------------


def test_the_note_follows_the_handbook_format_in_chinese_and_english() -> None:
    lines = [OrderLine.model_validate(line())]
    assert (
        RULES.notes.note("王芳", lines, "", "韵达", no_coverage=False, language="zh-CN")
        == "[王芳]6瓶1983,发韵达"
    )
    assert (
        RULES.notes.note("Wang Fang", lines, "gift wrap", "Yunda", no_coverage=False, language="en")
        == "[Wang Fang] 6 bottles 1983, gift wrap, ship with Yunda"
    )
    one_box = [OrderLine.model_validate(line("T-1", "龙井", 1, 8800, category="tea"))]
    assert (
        RULES.notes.note("Li", one_box, "", None, no_coverage=True, language="en")
        == "[Li] 1 box 龙井, no partner courier covers the address"
    )


def test_a_clean_order_is_confirmed_and_the_cheapest_covering_courier_chosen() -> None:
    decision = domain.first_seen(event(), RULES, ROSTER, [], T0)
    assert types(decision) == ["order.reviewed", "order.courier_assigned"]
    assert decision.order.review is not None
    assert decision.order.review.outcome == "confirmed"
    assert decision.order.review.note == "[Wang Fang]6瓶1983,发韵达"
    assert decision.order.on_duty_agent_id == "duty-1"  # 10:00 in Shanghai


@pytest.mark.parametrize(
    ("province", "city", "requested", "expected"),
    [
        ("浙江", "杭州", None, "yunda"),  # province spelled without 省
        ("新疆维吾尔自治区", "乌鲁木齐市", None, "zto"),  # Yunda does not reach Xinjiang
        ("浙江省", "杭州市", "sf", "sf"),  # the customer's choice, since it covers
        ("香港特别行政区", "香港", "yunda", "sf"),  # asked for Yunda, which does not reach
        ("台湾省", "台北市", None, None),  # no partner at all
    ],
)
def test_the_courier_is_the_customers_choice_if_it_covers_else_the_best_ranked(
    province: str, city: str, requested: str | None, expected: str | None
) -> None:
    choice = RULES.couriers.choose(province, city, "某区", requested)
    assert (choice.courier.code if choice else None) == expected


def test_no_coverage_marks_the_order_asks_the_customer_and_reports_marketplace_orders() -> None:
    decision = domain.first_seen(
        event(
            address={**ADDRESS, "province": "台湾省", "city": "台北市", "district": "信义区"},
            channel="marketplace",
            marketplace="jd",
        ),
        RULES,
        ROSTER,
        [],
        T0,
    )
    assert types(decision) == ["order.reviewed", "order.no_courier_coverage"]
    uncovered = decision.events[1]
    assert uncovered.model_dump()["report_to_marketplace"] is True
    assert uncovered.model_dump()["refund_proposed"] is True
    [notice] = decision.notices
    assert notice.template == "inquiry_reply"
    assert "退款" in notice.parameters["reply"]
    assert decision.order.review is not None
    assert [r.code.value for r in decision.order.review.reasons] == ["no_courier_coverage"]


def test_an_overnight_shift_covers_the_small_hours_of_the_next_day() -> None:
    roster = DutyRoster.model_validate(
        {
            "shifts": [
                {"agent_id": "late", "days": ["mon"], "start": "20:00", "end": "02:00"},
                {"agent_id": "day", "start": "08:00", "end": "20:00"},
            ]
        }
    )
    monday_night = T0 + timedelta(hours=13)  # 23:00 Monday in Shanghai
    tuesday_small_hours = T0 + timedelta(hours=15)  # 01:00 Tuesday
    tuesday_late = T0 + timedelta(days=1, hours=13)  # Tuesday 23:00: no late shift
    assert roster.on_duty(monday_night) == "late"
    assert roster.on_duty(tuesday_small_hours) == "late"
    assert roster.on_duty(tuesday_late) is None
    assert roster.on_duty(T0) == "day"


def test_a_shift_time_with_an_offset_of_its_own_is_refused() -> None:
    shift = {"agent_id": "x", "start": "08:00+01:00", "end": "20:00"}
    with pytest.raises(ValidationError, match="without an offset"):
        DutyRoster.model_validate({"shifts": [shift]})


# -- unpaid follow-up ----------------------------------------------------------------------------


def test_reminders_fire_once_then_the_uncontacted_order_is_lost_for_the_duty_agent() -> None:
    order = placed()
    first = domain.fire_due(order, RULES, [], T0 + timedelta(minutes=11))
    assert types(first) == ["order.payment_reminder_due"]
    assert first is not None
    assert first.notices[0].template == "payment_reminder"
    assert first.notices[0].parameters["amount"] == "1188.00"
    assert domain.fire_due(order, RULES, [], T0 + timedelta(minutes=12)) is None  # fired once
    lost = domain.fire_due(order, RULES, [], T0 + timedelta(minutes=22))
    assert types(lost) == ["order.lost"]
    assert order.lost is not None
    assert order.lost.agent_id == "duty-1"


def test_a_contact_within_the_lost_window_saves_the_order_from_counting_as_lost() -> None:
    order = placed()
    contacts = [Contact("agent-3", T0 + timedelta(minutes=15), "inq-1")]
    decision = domain.fire_due(order, RULES, contacts, T0 + timedelta(minutes=22))
    assert "order.lost" not in types(decision)
    assert order.lost is None


def test_after_a_long_outage_only_the_latest_reminder_goes_out_and_expiry_closes() -> None:
    order = placed()
    late = domain.fire_due(order, RULES, [], T0 + timedelta(hours=3))
    assert types(late) == ["order.lost", "order.payment_reminder_due"]
    assert late is not None
    assert late.events[1].model_dump()["reminder"] == "second"
    expired = domain.fire_due(order, RULES, [], T0 + timedelta(hours=25))
    assert types(expired) == ["order.expired", "order.follow_up_closed"]
    assert order.status is OrderStatus.EXPIRED
    assert order.next_due_at is None


def test_payment_stops_the_timers_and_recovers_a_lost_order() -> None:
    order = placed()
    domain.fire_due(order, RULES, [], T0 + timedelta(minutes=22))
    paid = domain.apply(
        order, event("paid", paid_at=T0 + timedelta(minutes=25)), RULES, [], T0, change_id="x"
    )
    assert types(paid) == ["order.loss_recovered", "order.attributed"]
    assert all(t.done for t in order.timers)
    assert domain.fire_due(order, RULES, [], T0 + timedelta(days=2)) is None


# -- lifecycle out of order, refunds --------------------------------------------------------------


def test_paid_before_placed_records_the_order_and_the_late_placement_changes_nothing() -> None:
    paid_first = domain.first_seen(
        event("paid", paid_at=T0 + timedelta(minutes=3)), RULES, ROSTER, [], T0
    )
    assert types(paid_first) == ["order.reviewed", "order.courier_assigned", "order.attributed"]
    order = paid_first.order
    assert order.status is OrderStatus.PAID
    assert domain.apply(order, event("placed"), RULES, [], T0, change_id="x") is None
    assert domain.fire_due(order, RULES, [], T0 + timedelta(hours=30)) is None


def test_the_same_shipment_twice_is_a_repeat_and_another_one_is_refused() -> None:
    order = placed()
    shipped = event("shipped", shipped_at=T0, carrier="yunda", tracking_number="YD1")
    first = domain.apply(order, shipped, RULES, [], T0, change_id="x")
    assert types(first) == ["order.shipping_notice_due"]
    assert first is not None
    assert first.notices[0].parameters == {
        "order_id": "O-1",
        "carrier": "韵达",
        "tracking_number": "YD1",
    }
    assert domain.apply(order, shipped, RULES, [], T0, change_id="y") is None
    other = event("shipped", shipped_at=T0, carrier="sf", tracking_number="SF9")
    with pytest.raises(Rejected, match="already shipped with yunda YD1"):
        domain.apply(order, other, RULES, [], T0, change_id="z")


def test_a_partial_refund_keeps_the_deal_and_a_full_refund_revokes_it() -> None:
    contacts = [Contact("agent-7", T0 - timedelta(minutes=30), "inq-1")]
    order = domain.first_seen(
        event("paid", paid_at=T0 + timedelta(minutes=5)), RULES, ROSTER, contacts, T0
    ).order
    assert order.attribution is not None
    assert order.attribution.agent_id == "agent-7"

    def refund(refund_id: str, cents: int) -> domain.Decision | None:
        body = step(
            order_body("refunded", order_id="O-1", paid_at=T0),
            "refunded",
            refund_id=refund_id,
            refund_amount_cents=cents,
            refunded_at=T0 + timedelta(days=3),
        )
        return domain.apply(
            order, CommerceOrderEvent.model_validate(body), RULES, [], T0, change_id=refund_id
        )

    assert types(refund("R1", 19800)) == ["order.refunded"]
    with pytest.raises(Rejected, match="refund_amount_cents"):
        refund("R2", 6 * 19800)
    full = refund("R3", 5 * 19800)
    assert types(full) == [
        "order.refunded",
        "order.follow_up_closed",
        "order.attribution_revoked",
    ]
    assert full is not None
    assert full.events[2].model_dump()["agent_id"] == "agent-7"
    assert order.status is OrderStatus.REFUNDED
    assert refund("R3", 5 * 19800) is None  # the same refund again


def test_a_refund_of_an_order_never_paid_is_refused() -> None:
    order = placed()
    body = step(
        order_body(order_id="O-1"),
        "refunded",
        refund_id="R1",
        refund_amount_cents=100,
        refunded_at=T0,
    )
    with pytest.raises(Rejected, match="never paid"):
        domain.apply(order, CommerceOrderEvent.model_validate(body), RULES, [], T0, change_id="r")


# -- verified changes ----------------------------------------------------------------------------


def _code(order: Order, code: str = "123456") -> str:
    decision = changes.request_code(
        order, verification_id="v1", code=code, actor=AGENT, rules=RULES, now=T0
    )
    assert decision.notices[0].parameters == {"code": code, "valid_minutes": 10}
    return "v1"


def _change(order: Order, proof: Proof, **request: Any) -> domain.Decision:
    return changes.change_order(
        order,
        change_id="c1",
        request=ChangeRequest(**request),
        proof=proof,
        actor=AGENT,
        rules=RULES,
        contacts=[],
        now=T0 + timedelta(minutes=1),
    )


def test_three_wrong_codes_lock_the_verification_and_each_failure_is_audited() -> None:
    order = placed()
    vid = _code(order)
    more = [LineChange("JZ-1983", 8)]
    for attempt in (1, 2, 3):
        failed = _change(order, Proof("one_time_code", vid, "000000"), lines=more)
        assert failed.outcome == "verification_failed"
        assert failed.events[0].model_dump()["failed_attempts"] == attempt
    assert failed.events[0].model_dump()["locked"] is True
    locked = _change(order, Proof("one_time_code", vid, "123456"), lines=more)
    assert locked.outcome == "verification_failed"
    assert [a.action for a in order.audit].count("verification_failed") == 4
    assert order.lines[0].quantity == 6


def test_a_verified_change_is_audited_with_before_and_after_and_confirmed_to_the_customer() -> None:
    order = placed()
    vid = _code(order)
    new_address = DeliveryAddress(**{**ADDRESS, "street": "文一西路 1 号"})
    done = _change(order, Proof("one_time_code", vid, "123456"), address=new_address)
    assert done.outcome == "changed"
    assert types(done)[:2] == ["order.changed", "order.reviewed"]
    entry = order.audit[-1]
    assert (entry.action, entry.actor_id) == ("change", "agent-9")
    assert entry.before == {"address": {**ADDRESS, "postal_code": ""}}
    assert entry.after is not None
    assert entry.after["address"]["street"] == "文一西路 1 号"
    assert done.notices[-1].template == "order_change_confirmation"
    again = _change(order, Proof("one_time_code", vid, "123456"), lines=[LineChange("JZ-1983", 7)])
    assert again.outcome == "verification_failed"  # a code works once


def test_matching_details_verify_and_a_wrong_phone_does_not() -> None:
    order = placed()
    wrong = _change(
        order,
        Proof("order_details", receiver="王芳", phone="13800000000"),
        lines=[LineChange("JZ-1983", 12)],
    )
    assert wrong.outcome == "verification_failed"
    right = _change(
        order,
        Proof("order_details", receiver=" 王芳 ", phone="138-1234-5678"),
        lines=[LineChange("JZ-1983", 12)],
    )
    assert right.outcome == "changed"
    assert order.total_cents == 12 * 19800
    assert order.changes[-1].sold_more is True


def test_no_change_after_shipping_and_the_refusal_is_audited() -> None:
    order = placed()
    domain.apply(
        order,
        event("shipped", shipped_at=T0, carrier="yunda", tracking_number="YD1"),
        RULES,
        [],
        T0,
        change_id="s",
    )
    refused = _change(
        order,
        Proof("order_details", receiver="王芳", phone="13812345678"),
        lines=[LineChange("JZ-1983", 12)],
    )
    assert refused.outcome == "refused"
    assert order.audit[-1].action == "change_refused"
    with pytest.raises(Rejected, match="cannot change"):
        _code(order)


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        ([LineChange("JZ-1983", 6)], "change"),  # nothing differs
        ([LineChange("JZ-1983", 0)], "lines.0.quantity"),
        ([LineChange("NEW-1", 1)], "lines.0.name"),
        ([LineChange("JZ-1983", 2), LineChange("JZ-1983", 3)], "lines.1.sku"),
        ([LineChange("JZ-1983", 7, unit_price_cents=1)], "lines.0.unit_price_cents"),
    ],
)
def test_a_change_wrong_in_itself_is_invalid_naming_the_field(
    lines: list[LineChange], field: str
) -> None:
    order = placed()
    with pytest.raises(domain.Invalid) as caught:
        _change(order, Proof("order_details", receiver="王芳", phone="13812345678"), lines=lines)
    assert caught.value.field == field
    assert order.audit == []


def test_a_card_number_in_the_buyers_note_is_never_stored() -> None:
    order = placed(buyer_note="请开发票 卡号 4111 1111 1111 1111")
    assert "4111" not in order.buyer_note
    assert order.review is not None
    assert "4111" not in order.review.note
