"""The packaged after-sales policy, one case per rule (table-driven), and its loader's checks."""

from datetime import UTC, datetime, timedelta

import pytest
from kefu_aftersales.domain.policy import (
    Policy,
    PolicyError,
    ReviewedLine,
    ReviewRequest,
    load_policy,
)
from kefu_shared.contracts.aftersales import CaseKind, RequestReason, ShippingPayer, Verdict

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
POLICY = load_policy()

K = CaseKind
R = RequestReason


def request(
    kind: CaseKind,
    reason: RequestReason,
    *,
    days: float = 2,
    category: str = "clothing",
    opened: bool = False,
    price: int = 19_900,
    quantity: int = 1,
) -> ReviewRequest:
    return ReviewRequest(
        kind=kind,
        reason=reason,
        lines=[ReviewedLine("SKU-1", quantity, category, price)],
        item_opened=opened,
        delivered_at=NOW - timedelta(days=days),
    )


# (rule that must decide, verdict, the request)
TABLE = [
    (
        "opened_food_or_alcohol_not_for_changed_mind",
        Verdict.REJECTED,
        request(K.RETURN, R.CHANGED_MIND, category="alcohol", opened=True),
    ),
    (
        "opened_hygiene_items_not_for_changed_mind",
        Verdict.REJECTED,
        request(K.EXCHANGE, R.CHANGED_MIND, category="underwear", opened=True),
    ),
    ("refund_only_needs_a_fault", Verdict.REJECTED, request(K.REFUND_ONLY, R.CHANGED_MIND)),
    (
        "repair_needs_a_fault",
        Verdict.REJECTED,
        request(K.REPAIR, R.CHANGED_MIND, category="electronics"),
    ),
    (
        "repair_only_for_durable_goods",
        Verdict.REJECTED,
        request(K.REPAIR, R.QUALITY_PROBLEM, category="clothing"),
    ),
    ("changed_mind_window_7_days", Verdict.REJECTED, request(K.RETURN, R.CHANGED_MIND, days=8)),
    (
        "quality_window_15_days",
        Verdict.REJECTED,
        request(K.RETURN, R.QUALITY_PROBLEM, days=16),
    ),
    (
        "repair_warranty_365_days",
        Verdict.REJECTED,
        request(K.REPAIR, R.QUALITY_PROBLEM, days=366, category="electronics"),
    ),
    (
        "late_transit_damage_needs_supervisor",
        Verdict.NEEDS_SUPERVISOR,
        request(K.RETURN, R.DAMAGED_IN_TRANSIT, days=5),
    ),
    (
        "supervisor_above_2000",
        Verdict.NEEDS_SUPERVISOR,
        request(K.RETURN, R.QUALITY_PROBLEM, price=150_000, quantity=2),
    ),
    ("within_policy", Verdict.APPROVED, request(K.RETURN, R.CHANGED_MIND, days=6.9)),
]


@pytest.mark.parametrize(("rule", "verdict", "req"), TABLE, ids=[row[0] for row in TABLE])
def test_each_rule_of_the_policy_decides_its_own_case(
    rule: str, verdict: Verdict, req: ReviewRequest
) -> None:
    decision = POLICY.review(req, NOW)
    assert (decision.rule.id, decision.verdict) == (rule, verdict)


def test_the_table_covers_every_rule_of_the_packaged_policy() -> None:
    assert {row[0] for row in TABLE} == {rule.id for rule in POLICY.rules}


def test_unopened_alcohol_can_go_back_for_a_change_of_mind_inside_seven_days() -> None:
    req = request(K.RETURN, R.CHANGED_MIND, category="alcohol", opened=False)
    assert POLICY.review(req, NOW).verdict is Verdict.APPROVED


def test_opened_alcohol_with_a_quality_problem_is_taken_back() -> None:
    req = request(K.RETURN, R.QUALITY_PROBLEM, category="alcohol", opened=True, days=10)
    assert POLICY.review(req, NOW).verdict is Verdict.APPROVED


def test_exactly_seven_days_after_delivery_is_still_inside_the_window() -> None:
    assert POLICY.review(request(K.RETURN, R.CHANGED_MIND, days=7), NOW).rule.id == "within_policy"


def test_the_customer_pays_return_shipping_for_a_change_of_mind_and_the_shop_for_a_fault() -> None:
    mind = POLICY.review(request(K.RETURN, R.CHANGED_MIND), NOW)
    fault = POLICY.review(request(K.EXCHANGE, R.WRONG_ITEM), NOW)
    money_only = POLICY.review(request(K.REFUND_ONLY, R.DAMAGED_IN_TRANSIT), NOW)
    assert mind.return_shipping_paid_by is ShippingPayer.CUSTOMER
    assert fault.return_shipping_paid_by is ShippingPayer.SHOP
    assert money_only.return_shipping_paid_by is ShippingPayer.NONE


def test_the_refund_amount_is_the_lines_value_and_exchanges_refund_nothing() -> None:
    ret = POLICY.review(request(K.RETURN, R.QUALITY_PROBLEM, price=12_345, quantity=3), NOW)
    exchange = POLICY.review(request(K.EXCHANGE, R.QUALITY_PROBLEM, price=12_345), NOW)
    assert ret.refund_amount_cents == 37_035
    assert exchange.refund_amount_cents is None


def test_a_rejecting_rule_speaks_the_customers_language() -> None:
    rule = POLICY.review(request(K.RETURN, R.CHANGED_MIND, days=9), NOW).rule
    assert rule.message("zh-CN") == "已超过签收后7天无理由退换期限"
    assert "7-day" in rule.message("en")


def test_a_policy_without_a_default_rule_is_refused_when_nothing_matches() -> None:
    policy = Policy.from_data(
        {
            "rules": [
                {
                    "id": "only_returns",
                    "when": {"kinds": ["return"]},
                    "verdict": "approved",
                    "description": "x",
                }
            ]
        }
    )
    with pytest.raises(PolicyError, match="default rule"):
        policy.review(request(K.EXCHANGE, R.WRONG_ITEM), NOW)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": []}, "no rules"),
        (
            {
                "rules": [
                    {"id": "a", "when": {"colour": "red"}, "verdict": "approved", "description": ""}
                ]
            },
            "unknown conditions",
        ),
        ({"rules": [{"id": "a", "when": {}, "verdict": "maybe", "description": ""}]}, "maybe"),
        (
            {
                "rules": [
                    {"id": "a", "when": {}, "verdict": "approved", "description": ""},
                    {"id": "a", "when": {}, "verdict": "approved", "description": ""},
                ]
            },
            "duplicate",
        ),
    ],
)
def test_a_broken_policy_file_is_refused_at_start_naming_the_problem(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_data(data)
