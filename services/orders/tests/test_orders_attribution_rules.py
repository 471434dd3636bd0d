"""The handbook's attribution rules (DOMAIN.md 2.7), one case per rule, on the pure decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from kefu_orders.domain.attribution import ChangeFact, Contact, Violation, attribute
from kefu_shared.contracts.orders import AttributionRule as Rule

PLACED = datetime(2026, 5, 18, 2, 0, tzinfo=UTC)
PAID = PLACED + timedelta(minutes=30)
LOOKBACK = timedelta(days=15)


def at(minutes: float) -> datetime:
    """Minutes relative to the placement (negative: before it)."""
    return PLACED + timedelta(minutes=minutes)


def talk(agent: str, minutes: float, inquiry: str = "inq-1", category: str = "product") -> Contact:
    return Contact(agent, at(minutes), inquiry, "chat", category)


def change(
    minutes: float,
    *,
    substantive: bool = True,
    sold_more: bool = False,
    price_cut: bool = False,
    agent: str | None = None,
    approved_by: str | None = None,
) -> ChangeFact:
    return ChangeFact(
        at=at(minutes),
        substantive=substantive,
        sold_more=sold_more,
        price_cut=price_cut,
        agent_id=agent,
        approved_by=approved_by,
        change_id=f"ch-{minutes}",
    )


@dataclass(frozen=True)
class Case:
    contacts: list[Contact]
    expected_agent: str | None
    expected_rule: Rule
    changes: list[ChangeFact] = field(default_factory=list)
    violations: tuple[Violation, ...] = ()


CASES = {
    # 1. The customer consulted an agent before placing: the order is that agent's.
    "consulted before placing: the consulting agent's": Case(
        [talk("A", -60)], "A", Rule.CONSULTED_BEFORE_PLACING
    ),
    # 1b. ...or before paying (placed, then the agent talked, then the customer paid).
    "consulted after placing but before paying: that agent's": Case(
        [talk("A", 5)], "A", Rule.CONSULTED_BEFORE_PAYING
    ),
    # 2. Placed and paid before talking to an agent: nobody's.
    "placed and paid before any talk: nobody's": Case(
        [talk("A", 90)], None, Rule.PAID_BEFORE_CONTACT
    ),
    # 2b. ...unless the agent then sold something more.
    "paid before talk, then the agent sold more: the agent's": Case(
        [talk("A", 90)],
        "A",
        Rule.SOLD_MORE_AFTER_PAYMENT,
        changes=[change(100, sold_more=True)],
    ),
    # 2c. ...or the order changed for real with the agent.
    "paid before talk, then the order changed with the agent: the agent's": Case(
        [talk("A", 90)],
        "A",
        Rule.CHANGED_AFTER_PAYMENT,
        changes=[change(100, agent="A")],
    ),
    # 2d. A change that is not a real one (price, address) after payment credits nobody.
    "paid before talk, then only the address changed: nobody's": Case(
        [talk("A", 90)],
        None,
        Rule.PAID_BEFORE_CONTACT,
        changes=[change(100, substantive=False)],
    ),
    "no agent talked to the customer at all: nobody's": Case([], None, Rule.NO_CONTACT),
    # 3a. An earlier quoting agent keeps it when a later one only helped to change the price.
    "an earlier quote is kept when a later agent only adjusted the price": Case(
        [talk("A", -60, "inq-1"), talk("B", 10, "inq-2")],
        "A",
        Rule.EARLIER_QUOTE_KEPT,
        changes=[change(12, substantive=False, agent="B")],
    ),
    # 3a'. ...or took over the same conversation (a transfer) and only assisted.
    "the first agent of the closing conversation keeps it over a helper": Case(
        [talk("A", -60, "inq-1"), talk("B", -30, "inq-1")], "A", Rule.EARLIER_QUOTE_KEPT
    ),
    # 3b. The earlier talk did not close; the customer came back and another agent closed it.
    "the earlier talk did not close: the closer gets it": Case(
        [talk("A", -2 * 24 * 60, "inq-1"), talk("B", -60, "inq-2")], "B", Rule.CLOSER_TAKES_IT
    ),
    # 3b'. A later agent who changed the order for real before payment closed it.
    "a later agent who really changed the order before payment closed it": Case(
        [talk("A", -60, "inq-1"), talk("B", 10, "inq-2")],
        "B",
        Rule.CLOSER_TAKES_IT,
        changes=[change(12, sold_more=True, agent="B")],
    ),
    # 4. No price cut for another agent's quoted customer without a supervisor's approval.
    "a price cut for another agent's quoted customer is a violation, never credited": Case(
        [talk("A", -60, "inq-1"), talk("B", 10, "inq-2")],
        "A",
        Rule.EARLIER_QUOTE_KEPT,
        changes=[change(12, substantive=False, price_cut=True, agent="B")],
        violations=(Violation(agent_id="B", quoted_by="A"),),
    ),
    "a price cut a supervisor approved is no violation": Case(
        [talk("A", -60, "inq-1"), talk("B", 10, "inq-2")],
        "A",
        Rule.EARLIER_QUOTE_KEPT,
        changes=[change(12, substantive=False, price_cut=True, agent="B", approved_by="sup-1")],
    ),
    # Not sales talk: after-sales contacts (DOMAIN.md 4.3) and evidence older than the lookback.
    "an after-sales conversation is not a consultation": Case(
        [talk("A", -60, category="after_sales")], None, Rule.NO_CONTACT
    ),
    "talk older than the evidence window does not count": Case(
        [talk("A", -16 * 24 * 60)], None, Rule.NO_CONTACT
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_handbook_rule_decides_who_gets_the_order(name: str) -> None:
    case = CASES[name]
    result = attribute(PLACED, PAID, case.contacts, case.changes, lookback=LOOKBACK)
    assert (result.agent_id, result.rule) == (case.expected_agent, case.expected_rule)
    assert result.violations == case.violations


def test_every_agent_who_talked_counts_as_serving_the_customer() -> None:
    result = attribute(
        PLACED,
        PAID,
        [talk("A", -2 * 24 * 60, "inq-1"), talk("B", -60, "inq-2")],
        [],
        lookback=LOOKBACK,
    )
    assert result.consulting_agent_ids == ("A", "B")
    assert result.conversation == "inq-2"
    assert result.channel == "chat"


def test_the_decision_does_not_depend_on_the_order_evidence_arrived_in() -> None:
    contacts = [talk("A", -2 * 24 * 60, "inq-1"), talk("B", -60, "inq-2"), talk("C", 90, "inq-3")]
    forward = attribute(PLACED, PAID, contacts, [], lookback=LOOKBACK)
    backward = attribute(PLACED, PAID, list(reversed(contacts)), [], lookback=LOOKBACK)
    assert forward == backward
