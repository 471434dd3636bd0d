"""The case aggregate without any server: the state machine, notices, decisions, timers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kefu_aftersales.domain import case as domain
from kefu_aftersales.domain.case import (
    Case,
    Customer,
    DomainError,
    RequestDetails,
    StepDetails,
    format_cents,
    notice_language,
)
from kefu_aftersales.domain.flows import load_flows
from kefu_aftersales.domain.inference import load_inferrer
from kefu_aftersales.domain.orders import (
    OrderLine,
    OrderSnapshot,
    RequestedLine,
    check_against_order,
)
from kefu_aftersales.domain.policy import load_policy
from kefu_shared.contracts.aftersales import (
    AftersalesCaseClosed,
    AftersalesStateChanged,
    CaseKind,
    CaseState,
    NegativeReviewReplyOverdue,
    RequestReason,
    Verdict,
)

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
POLICY = load_policy()
FLOWS = load_flows()
WINE = OrderLine("WINE-1983", "alcohol", 2, 19_900)
CUSTOMER = Customer("cust-1", channel="chat", language="zh-CN")


def opened(
    kind: CaseKind = CaseKind.RETURN,
    reason: RequestReason = RequestReason.QUALITY_PROBLEM,
    lines: tuple[OrderLine, ...] = (WINE,),
    delivered_days_ago: float = 2,
) -> domain.Decision:
    return domain.open_request(
        "AS-1",
        CUSTOMER,
        "O-1",
        RequestDetails(kind=kind, reason=reason, lines=lines),
        delivered_at=T0 - timedelta(days=delivered_days_ago),
        currency="CNY",
        policy=POLICY,
        now=T0,
    )


def move(case: Case, to: CaseState, **details: object) -> domain.Decision:
    return domain.transition(
        case,
        to,
        StepDetails(**details),  # type: ignore[arg-type]
        actor_id="agent-li",
        flows=FLOWS,
        policy=POLICY,
        now=T0,
    )


def test_an_approved_return_waits_for_the_parcel_and_the_customer_gets_three_notices() -> None:
    decision = opened()
    assert decision.case.state is CaseState.AWAITING_RETURN_PARCEL
    assert [n.template for n in decision.notices] == [
        "aftersales_requested",
        "aftersales_approved",
        "aftersales_awaiting_return_parcel",
    ]
    assert decision.notices[2].parameters["return_address"] == POLICY.return_address
    keys = [n.idempotency_key for n in decision.notices]
    assert keys == [
        "aftersales:AS-1:requested:1",
        "aftersales:AS-1:approved:2",
        "aftersales:AS-1:awaiting_return_parcel:3",
    ]


def test_a_refund_only_request_is_approved_without_a_parcel() -> None:
    decision = opened(CaseKind.REFUND_ONLY, RequestReason.DAMAGED_IN_TRANSIT)
    assert decision.case.state is CaseState.APPROVED
    refunded = move(decision.case, CaseState.REFUNDED)
    assert refunded.case.refund is not None
    assert refunded.case.refund.amount_cents == 39_800
    assert refunded.notices[0].parameters == {
        "case_id": "AS-1",
        "order_id": "O-1",
        "amount": "398.00",
        "currency": "CNY",
    }


def test_a_rejection_tells_the_customer_the_rules_reason_and_arms_the_auto_close() -> None:
    decision = opened(reason=RequestReason.CHANGED_MIND, delivered_days_ago=10)
    case = decision.case
    assert case.state is CaseState.REJECTED
    assert decision.notices[-1].parameters["reason"] == "已超过签收后7天无理由退换期限"
    assert case.next_timer_at == T0 + timedelta(hours=72)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (CaseState.AWAITING_RETURN_PARCEL, CaseState.INSPECTED),
        (CaseState.AWAITING_RETURN_PARCEL, CaseState.REFUNDED),
        (CaseState.AWAITING_RETURN_PARCEL, CaseState.APPROVED),
        (CaseState.AWAITING_RETURN_PARCEL, CaseState.ANSWERED),
    ],
)
def test_steps_outside_the_flow_are_refused_with_the_allowed_ones(
    source: CaseState, target: CaseState
) -> None:
    case = opened().case
    assert case.state is source
    with pytest.raises(DomainError) as refused:
        move(case, target)
    assert refused.value.field is None
    assert target.value in str(refused.value)


def test_a_supervisor_override_skips_the_flow_and_is_recorded() -> None:
    case = opened().case
    forced = domain.transition(
        case,
        CaseState.REFUNDED,
        StepDetails(),
        actor_id="boss",
        flows=FLOWS,
        policy=POLICY,
        now=T0,
        override_reason="客户已将商品丢弃，特批退款",
    )
    assert forced.case.state is CaseState.REFUNDED
    assert forced.case.history[-1].override
    changed = [e for e in forced.events if isinstance(e, AftersalesStateChanged)]
    assert changed[0].override
    assert changed[0].reason == "客户已将商品丢弃，特批退款"


def test_an_override_still_needs_a_reason() -> None:
    with pytest.raises(DomainError) as refused:
        domain.transition(
            opened().case,
            CaseState.RECEIVED,
            StepDetails(),
            actor_id="boss",
            flows=FLOWS,
            policy=POLICY,
            now=T0,
            override_reason="  ",
        )
    assert refused.value.field == "override.reason"


def test_inspection_needs_its_result_and_a_failed_one_blocks_the_refund() -> None:
    received = move(opened().case, CaseState.RECEIVED).case
    with pytest.raises(DomainError) as missing:
        move(received, CaseState.INSPECTED, inspection_passed=True)
    assert missing.value.field == "inspection_result"
    failed = move(received, CaseState.INSPECTED, inspection_passed=False, inspection_result="用过")
    with pytest.raises(DomainError, match="did not pass inspection"):
        move(failed.case, CaseState.REFUNDED)
    rejected = move(failed.case, CaseState.REJECTED, note="商品已开封饮用")
    assert rejected.notices[-1].parameters["reason"] == "商品已开封饮用"


def test_closing_emits_the_follow_up_event_with_what_the_survey_needs() -> None:
    case = opened(CaseKind.REFUND_ONLY, RequestReason.WRONG_ITEM).case
    refunded = move(case, CaseState.REFUNDED).case
    later = T0 + timedelta(hours=5)
    closed = domain.transition(
        refunded,
        CaseState.CLOSED,
        StepDetails(note="ok"),
        actor_id="agent-li",
        flows=FLOWS,
        policy=POLICY,
        now=later,
    )
    [event] = [e for e in closed.events if isinstance(e, AftersalesCaseClosed)]
    assert event.resolution == "refunded"
    assert event.resolution_seconds == 5 * 3600
    assert (event.customer_id, event.channel, event.language) == ("cust-1", "chat", "zh-CN")
    assert event.refunded_amount_cents == 39_800
    assert closed.case.next_timer_at is None
    with pytest.raises(DomainError, match="final"):
        move(closed.case, CaseState.REFUNDED)


def test_a_supervisor_can_overrule_a_policy_rejection_but_not_decide_twice() -> None:
    rejected = opened(reason=RequestReason.CHANGED_MIND, delivered_days_ago=10).case
    approved = domain.supervisor_decide(
        rejected, Verdict.APPROVED, supervisor_id="boss", reason="老客户", policy=POLICY, now=T0
    )
    assert approved.case.state is CaseState.AWAITING_RETURN_PARCEL
    assert approved.case.decision is not None
    assert approved.case.decision.rule == "supervisor_override"
    assert approved.case.decision.return_shipping_paid_by.value == "customer"
    with pytest.raises(DomainError, match="already"):
        domain.supervisor_decide(
            approved.case, Verdict.APPROVED, supervisor_id="boss", reason="x", policy=POLICY, now=T0
        )
    with pytest.raises(DomainError) as no_reason:
        domain.supervisor_decide(
            rejected, Verdict.APPROVED, supervisor_id="boss", reason=" ", policy=POLICY, now=T0
        )
    assert no_reason.value.field == "reason"


def test_a_review_deadline_fires_once_and_an_answer_after_it_is_late() -> None:
    review = domain.open_negative_review(
        "AS-R",
        review_id="r-1",
        marketplace="jd",
        order_id="O-1",
        customer_id="cust-1",
        rating=1,
        text="差评",
        posted_at=T0,
        language="zh-CN",
        policy=POLICY,
        now=T0,
    ).case
    assert review.next_timer_at == T0 + timedelta(hours=24)
    assert domain.fire_timers(review, T0 + timedelta(hours=23)).events == []
    fired = domain.fire_timers(review, T0 + timedelta(hours=25))
    assert [type(e) for e in fired.events] == [NegativeReviewReplyOverdue]
    assert fired.case.next_timer_at is None
    assert domain.fire_timers(fired.case, T0 + timedelta(hours=26)).events == []
    answered = domain.answer_review(
        fired.case, agent_id="li", reply="抱歉", explanation="物流", now=T0 + timedelta(hours=30)
    )
    assert answered.case.state is CaseState.ANSWERED
    assert not answered.events[-1].within_deadline  # type: ignore[attr-defined]


def test_order_checks_name_the_field_and_count_earlier_refunds() -> None:
    order = OrderSnapshot(
        "O-1", "cust-1", "delivered", (WINE,), delivered_at=T0 - timedelta(days=1)
    )
    check = check_against_order(
        order, "O-1", "cust-1", [RequestedLine("WINE-1983", 2)], {"WINE-1983": 1}
    )
    assert [(p.field, p.reason) for p in check.problems] == [
        ("lines.0.quantity", "quantity_above_bought")
    ]
    twice = check_against_order(
        order, "O-1", "cust-1", [RequestedLine("WINE-1983", 1), RequestedLine("WINE-1983", 1)], {}
    )
    assert [p.field for p in twice.problems] == ["lines.1.sku"]
    undelivered = OrderSnapshot("O-2", "cust-1", "paid", (WINE,))
    assert check_against_order(undelivered, "O-2", "cust-1", [], {}).problems[0].reason == (
        "not_delivered"
    )


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        ("收到的酒瓶破损了，我要退货", CaseKind.RETURN, RequestReason.DAMAGED_IN_TRANSIT),
        ("发错颜色了，能换货吗", CaseKind.EXCHANGE, RequestReason.WRONG_ITEM),
        (
            "The kettle stopped working, can you repair it?",
            CaseKind.REPAIR,
            RequestReason.QUALITY_PROBLEM,
        ),
        ("不想要了，申请退款", CaseKind.REFUND_ONLY, RequestReason.CHANGED_MIND),
        ("你好", CaseKind.RETURN, None),
    ],
)
def test_an_inquirys_text_suggests_kind_and_reason(
    text: str, kind: CaseKind, reason: RequestReason | None
) -> None:
    guess = load_inferrer().infer(text)
    assert (guess.kind, guess.reason) == (kind, reason)


def test_languages_and_amounts_as_the_customer_reads_them() -> None:
    assert [notice_language(x) for x in ("zh", "zh-CN", "en", "en-US", None)] == [
        "zh-CN",
        "zh-CN",
        "en",
        "en",
        "zh-CN",
    ]
    assert [format_cents(c) for c in (5, 19_900, 123_456)] == ["0.05", "199.00", "1234.56"]
