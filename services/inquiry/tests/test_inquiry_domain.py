"""The domain rules without any server: redaction, merging, routing, SLA clocks, spam."""

from datetime import UTC, datetime, timedelta

import pytest
from kefu_inquiry.domain import inquiry as domain
from kefu_inquiry.domain.classification import Classification
from kefu_inquiry.domain.inquiry import DomainError, IncomingMessage, Status
from kefu_inquiry.domain.knowledge import Article, best_match
from kefu_inquiry.domain.routing import Agent, Level, RoutingNeed, choose_agent
from kefu_inquiry.domain.sla import ClockState, SlaClock, SlaPolicy, SlaTargets, tick
from kefu_shared.contracts.inquiry import Category, Contact, SlaKind
from kefu_shared.pii import MASK, mask_email, mask_phone, redact_card_numbers
from kefu_shared.topics import Channel

T0 = datetime(2026, 11, 11, 10, 0, tzinfo=UTC)
POLICY = SlaPolicy(
    default=SlaTargets(first_response=60, next_response=120, resolution=3600), warn_ratio=0.5
)


def msg(text: str, message_id: str = "m1", channel: Channel = Channel.CHAT) -> IncomingMessage:
    return IncomingMessage(
        message_id=message_id,
        channel=channel,
        customer_id="c1",
        customer_name="王芳",
        contact=Contact(phone="13812345678"),
        content=text,
        order_reference=None,
        language=None,
        sent_at=T0,
    )


ORDER = Classification(Category.ORDER, 0.8, "zh", needs_human=False)


# -- card numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
)
def test_luhn_valid_card_numbers_are_removed(card: str) -> None:
    assert redact_card_numbers(f"我的卡号 {card} 付款失败") == f"我的卡号 {MASK} 付款失败"


def test_other_long_numbers_stay() -> None:
    text = "订单号 2024051812345678, phone 13812345678, card 4111111111111112"
    assert redact_card_numbers(text) == text


def test_contact_is_masked_for_display() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_email("wang.fang@example.com") == "w***@example.com"


# -- merging into the open inquiry --------------------------------------------------------------


def test_a_follow_up_on_another_channel_joins_the_open_inquiry() -> None:
    opened = domain.open_inquiry(
        "inq-1", msg("订单什么时候发"), ORDER, None, POLICY, T0, bot_min_score=0.6
    )
    assert opened.inquiry.status is Status.QUEUED
    assert [e.event_type for e in opened.events] == ["inquiry.received", "inquiry.classified"]
    later = T0 + timedelta(seconds=5)
    joined = domain.add_customer_message(
        opened.inquiry, msg("还有，能开发票吗", "m2", Channel.EMAIL), POLICY, later
    )
    assert [m.message_id for m in joined.inquiry.messages] == ["m1", "m2"]
    assert joined.inquiry.channels == [Channel.CHAT, Channel.EMAIL]
    [event] = joined.events
    assert event.event_type == "inquiry.received"
    assert not event.opened  # type: ignore[attr-defined]


def test_a_closed_inquiry_takes_no_more_messages() -> None:
    opened = domain.open_inquiry("inq-1", msg("在吗"), ORDER, None, POLICY, T0, bot_min_score=0.6)
    closed = domain.resolve(opened.inquiry, None, T0).inquiry
    with pytest.raises(DomainError):
        domain.add_customer_message(closed, msg("again", "m2"), POLICY, T0)


def test_a_confident_common_question_is_answered_by_the_bot_and_resolved() -> None:
    article = Article(
        id="a1",
        question="发票",
        answer="下单后在订单详情申请发票",
        keywords=["发票"],
        language="zh",
    )
    match = best_match([article], "能开发票吗", "zh", Category.ORDER)
    decision = domain.open_inquiry(
        "inq-1", msg("能开发票吗"), ORDER, match, POLICY, T0, bot_min_score=0.6
    )
    assert decision.inquiry.status is Status.RESOLVED
    assert [n.purpose for n in decision.notices] == ["bot_answer"]
    assert "inquiry.auto_answered" in [e.event_type for e in decision.events]


def test_a_complaint_is_never_answered_by_the_bot() -> None:
    article = Article(id="a1", question="q", answer="a", keywords=["投诉"], language="zh")
    complaint = Classification(Category.COMPLAINT, 0.9, "zh", needs_human=False)
    match = best_match([article], "我要投诉", "zh", Category.COMPLAINT)
    decision = domain.open_inquiry(
        "inq-1", msg("我要投诉"), complaint, match, POLICY, T0, bot_min_score=0.1
    )
    assert decision.inquiry.status is Status.QUEUED


# -- routing ------------------------------------------------------------------------------------


def agent(agent_id: str, **kw: object) -> Agent:
    base: dict[str, object] = {
        "categories": [Category.ORDER],
        "languages": ["zh"],
        "on_duty": True,
        "capacity": 2,
    }
    return Agent(id=agent_id, **{**base, **kw})  # type: ignore[arg-type]


NEED = RoutingNeed(category=Category.ORDER, language="zh")


def test_the_least_loaded_on_duty_agent_with_the_skill_gets_it() -> None:
    agents = [
        agent("busy"),
        agent("free"),
        agent("off", on_duty=False),
        agent("wrong-skill", categories=[Category.PAYMENT]),
        agent("english", languages=["en"]),
    ]
    assert choose_agent(agents, {"busy": 1}, NEED) == agents[1]


def test_nobody_free_means_the_inquiry_waits() -> None:
    assert choose_agent([agent("a", capacity=1)], {"a": 1}, NEED) is None


def test_seniors_take_escalations_and_ordinary_work_only_as_a_last_resort() -> None:
    senior = agent("s", level=Level.SENIOR)
    junior = agent("j")
    assert choose_agent([senior, junior], {"j": 1}, NEED) == junior
    escalated = RoutingNeed(
        category=Category.ORDER, language="zh", level=Level.SENIOR, excluded=frozenset({"j"})
    )
    assert choose_agent([senior, junior], {}, escalated) == senior


def test_low_confidence_goes_to_any_agent_speaking_the_language() -> None:
    triage = RoutingNeed(category=Category.PRODUCT, language="zh", triage=True)
    assert choose_agent([agent("a")], {}, triage) is not None


# -- SLA clocks ---------------------------------------------------------------------------------


def test_a_clock_warns_then_breaches_each_once() -> None:
    clock = SlaClock.start(SlaKind.FIRST_RESPONSE, T0, 60, 0.5)
    clocks, alarms = tick([clock], T0 + timedelta(seconds=10))
    assert alarms == []
    clocks, alarms = tick(clocks, T0 + timedelta(seconds=31))
    assert [(a.kind, a.breach) for a in alarms] == [(SlaKind.FIRST_RESPONSE, False)]
    clocks, alarms = tick(clocks, T0 + timedelta(seconds=35))
    assert alarms == []
    clocks, alarms = tick(clocks, T0 + timedelta(seconds=61))
    assert [a.breach for a in alarms] == [True]
    assert clocks[0].state is ClockState.MISSED
    assert tick(clocks, T0 + timedelta(hours=1))[1] == []


def test_a_reply_in_time_is_a_hit_and_stops_the_clock() -> None:
    opened = domain.open_inquiry("inq-1", msg("在吗"), ORDER, None, POLICY, T0, bot_min_score=0.6)
    assigned = domain.assign(opened.inquiry, agent("a"), T0).inquiry
    replied = domain.reply(assigned, "a", "您好", "r1", T0 + timedelta(seconds=20)).inquiry
    first = next(c for c in replied.clocks if c.kind is SlaKind.FIRST_RESPONSE)
    assert first.state is ClockState.HIT
    # The next customer message starts the next-response clock.
    again = domain.add_customer_message(replied, msg("还在吗", "m2"), POLICY, T0 + timedelta(60))
    kinds = [c.kind for c in again.inquiry.clocks if c.state is ClockState.ACTIVE]
    assert SlaKind.NEXT_RESPONSE in kinds


def test_targets_are_overridden_per_channel_and_category() -> None:
    policy = SlaPolicy.from_data(
        {
            "default": {"first_response": 100, "resolution": 1000},
            "channels": {"chat": {"first_response": 10}},
            "categories": {"chat": {"complaint": {"resolution": 50}}},
        }
    )
    targets = policy.targets("chat", Category.COMPLAINT)
    assert (targets.first_response, targets.resolution) == (10, 50)
    assert policy.targets("email", Category.COMPLAINT).first_response == 100


# -- spam ---------------------------------------------------------------------------------------


def test_spam_is_closed_at_once_without_clocks_or_received_event() -> None:
    spam = Classification(Category.SPAM, 0.9, "zh", needs_human=False)
    refusal = domain.spam_refusal("inq-s", "c1", "zh")
    decision = domain.open_spam(msg("加微信领红包"), spam, refusal, T0)
    assert decision.inquiry.status is Status.SPAM
    assert decision.inquiry.clocks == []
    assert [e.event_type for e in decision.events] == ["inquiry.spam_filtered"]
    assert decision.notices == [refusal]
