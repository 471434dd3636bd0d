"""Sales attribution: which agent, if any, gets a paid order as a deal (DOMAIN.md 2.7).

The liquor shop's handbook (关于订单备注和争议订单归属原则), made concrete with the evidence kefu
has: agent replies in the customer's inquiries (``inquiry.agent_replied``), contacts agents
record for phone / WeChat / QQ (``POST /contacts``), and changes agents made to the order.

- A *conversation* is one inquiry (a recorded contact or an agent's change is a conversation of
  its own). Its first replying agent is the one who quoted; later agents in it only assisted.
- Consulted before placing: the agent of the last conversation before the order was placed gets
  it (``consulted_before_placing``). If an earlier conversation was with another agent, that
  talk did not close and the closer gets it (``closer_takes_it``); if other agents only
  assisted in the closing conversation, its first agent keeps it (``earlier_quote_kept``).
- After placing and before paying, another agent who only assisted (a price adjustment, a
  change without real change) leaves the order with the quoting agent (``earlier_quote_kept``);
  a real change (items or quantities) made with that agent makes them the closer.
- Nobody before placing, an agent before paying: that agent's (``consulted_before_paying``).
- Placed and paid before any talk: nobody's (``paid_before_contact``), unless an agent then sold
  more (``sold_more_after_payment``) or the order really changed with them
  (``changed_after_payment``). No talk at all: nobody's (``no_contact``).
- An agent may not cut the price for a customer another agent quoted without a supervisor's
  approval: such a cut is reported as a violation, and the violator is never credited for it.
- After-sales and complaint conversations are not sales talk; only evidence from the lookback
  window before placing (15 days by default, the handbook's evidence period) counts.
Refunded orders are not deals: the order aggregate revokes the attribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from kefu_shared.contracts.orders import AttributionRule

NOT_SALES_CATEGORIES = frozenset({"after_sales", "complaint", "spam"})


@dataclass(frozen=True)
class Contact:
    """An agent talked to the customer at ``at`` in ``conversation``."""

    agent_id: str
    at: datetime
    conversation: str
    channel: str | None = None
    category: str | None = None

    @property
    def sales(self) -> bool:
        return self.category not in NOT_SALES_CATEGORIES


@dataclass(frozen=True)
class ChangeFact:
    """A change of the order, as attribution sees it."""

    at: datetime
    substantive: bool
    sold_more: bool
    price_cut: bool
    agent_id: str | None = None
    approved_by: str | None = None
    change_id: str = ""


@dataclass(frozen=True)
class Violation:
    agent_id: str
    quoted_by: str
    kind: str = "price_cut_on_quoted_customer"


@dataclass(frozen=True)
class Attribution:
    agent_id: str | None
    rule: AttributionRule
    conversation: str | None = None
    channel: str | None = None
    consulting_agent_ids: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()


def attribute(
    placed_at: datetime,
    paid_at: datetime,
    contacts: Sequence[Contact],
    changes: Sequence[ChangeFact],
    *,
    lookback: timedelta,
    price_approved_by: str | None = None,
) -> Attribution:
    """Decide who gets the order from the evidence (see the module's docstring)."""
    talk = [c for c in contacts if c.sales and c.at >= placed_at - lookback]
    # An agent who changed the order talked to the customer at that moment.
    talk += [
        Contact(ch.agent_id, ch.at, f"change:{ch.change_id or ch.at.isoformat()}")
        for ch in changes
        if ch.agent_id
    ]
    talk.sort(key=lambda c: c.at)
    ordered_changes = sorted(changes, key=lambda ch: ch.at)
    consulting = tuple(dict.fromkeys(c.agent_id for c in talk))
    before = [c for c in talk if c.at <= placed_at]
    between = [c for c in talk if placed_at < c.at <= paid_at]
    after = [c for c in talk if c.at > paid_at]

    quoting = _closing_first(before) if before else None
    decided: tuple[str | None, AttributionRule, Contact | None]
    if quoting is not None:
        decided = (quoting.agent_id, _before_placing_rule(before, quoting), quoting)
        assisting = [c for c in between if c.agent_id != quoting.agent_id]
        if assisting:
            closer = _real_change_with(assisting, between, ordered_changes, placed_at, paid_at)
            if closer is not None:
                decided = (closer.agent_id, AttributionRule.CLOSER_TAKES_IT, closer)
            else:
                decided = (quoting.agent_id, AttributionRule.EARLIER_QUOTE_KEPT, quoting)
    elif between:
        first = between[0]
        decided = (first.agent_id, AttributionRule.CONSULTED_BEFORE_PAYING, first)
        others = [c for c in between if c.agent_id != first.agent_id]
        closer = _real_change_with(others, between, ordered_changes, placed_at, paid_at)
        if closer is not None:
            decided = (closer.agent_id, AttributionRule.CLOSER_TAKES_IT, closer)
    elif after:
        decided = (None, AttributionRule.PAID_BEFORE_CONTACT, None)
        for change in ordered_changes:
            if change.at <= paid_at or not change.substantive:
                continue
            seller = _agent_of(change, after)
            if seller is not None:
                rule = (
                    AttributionRule.SOLD_MORE_AFTER_PAYMENT
                    if change.sold_more
                    else AttributionRule.CHANGED_AFTER_PAYMENT
                )
                decided = (seller.agent_id, rule, seller)
                break
    else:
        decided = (None, AttributionRule.NO_CONTACT, None)

    violations = _price_cut_violations(
        quoting.agent_id if quoting else None, talk, ordered_changes, price_approved_by
    )
    agent_id, rule, contact = decided
    if quoting is not None and any(v.agent_id == agent_id for v in violations):
        # A violator is never credited for the order (the handbook cancels the commission).
        agent_id, rule, contact = quoting.agent_id, AttributionRule.EARLIER_QUOTE_KEPT, quoting
    return Attribution(
        agent_id=agent_id,
        rule=rule,
        conversation=contact.conversation if contact else None,
        channel=contact.channel if contact else None,
        consulting_agent_ids=consulting,
        violations=tuple(violations),
    )


def _conversations(contacts: Sequence[Contact]) -> list[list[Contact]]:
    """Contacts grouped by conversation, ordered by each conversation's last contact."""
    groups: dict[str, list[Contact]] = {}
    for contact in contacts:
        groups.setdefault(contact.conversation, []).append(contact)
    return sorted(groups.values(), key=lambda g: g[-1].at)


def _closing_first(before: Sequence[Contact]) -> Contact:
    """The first contact of the last conversation before placing: the agent who closed it."""
    return _conversations(before)[-1][0]


def _before_placing_rule(before: Sequence[Contact], quoting: Contact) -> AttributionRule:
    conversations = _conversations(before)
    earlier = {c.agent_id for conv in conversations[:-1] for c in conv}
    if earlier - {quoting.agent_id}:
        return AttributionRule.CLOSER_TAKES_IT
    helpers = {c.agent_id for c in conversations[-1]} - {quoting.agent_id}
    if helpers:
        return AttributionRule.EARLIER_QUOTE_KEPT
    return AttributionRule.CONSULTED_BEFORE_PLACING


def _agent_of(change: ChangeFact, talk: Sequence[Contact]) -> Contact | None:
    """Who the change was made with: its agent, else the last agent talking before it."""
    if change.agent_id:
        mine = [c for c in talk if c.agent_id == change.agent_id and c.at <= change.at]
        if mine:
            return mine[-1]
        return Contact(change.agent_id, change.at, f"change:{change.change_id}")
    earlier = [c for c in talk if c.at <= change.at]
    return earlier[-1] if earlier else None


def _real_change_with(
    candidates: Sequence[Contact],
    talk: Sequence[Contact],
    changes: Sequence[ChangeFact],
    start: datetime,
    end: datetime,
) -> Contact | None:
    """A candidate agent with whom the order changed for real between ``start`` and ``end``."""
    names = {c.agent_id for c in candidates}
    for change in changes:
        if not (start < change.at <= end and change.substantive):
            continue
        with_agent = _agent_of(change, talk)
        if with_agent is not None and with_agent.agent_id in names:
            return with_agent
    return None


def _price_cut_violations(
    quoted_by: str | None,
    talk: Sequence[Contact],
    changes: Sequence[ChangeFact],
    order_approval: str | None,
) -> list[Violation]:
    if quoted_by is None:
        return []
    out: list[Violation] = []
    for change in changes:
        if not change.price_cut or change.approved_by or order_approval:
            continue
        cutter = _agent_of(change, talk)
        if cutter is not None and cutter.agent_id != quoted_by:
            violation = Violation(agent_id=cutter.agent_id, quoted_by=quoted_by)
            if violation not in out:
                out.append(violation)
    return out
