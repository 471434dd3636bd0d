"""Unit tests: the domain (calendar, KPIs, surveys, rounds) and the use cases with fakes."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from feedback_fakes import FakeDocuments, fake_deps
from feedback_testkit import GIFT_BOX, InquiryScript, at, the_week
from kefu_feedback import handlers
from kefu_feedback.adapters.report import duration, render_markdown
from kefu_feedback.domain.calendar import BusinessCalendar
from kefu_feedback.domain.facts import Fact, FactKind
from kefu_feedback.domain.intake import facts_of_inquiry_event
from kefu_feedback.domain.kpis import KpiQuery, compute, normalise_question, percentile, stats
from kefu_feedback.domain.links import SurveyLinks
from kefu_feedback.domain.policy import KpiPolicy, SurveyPolicy, load_calendar
from kefu_feedback.domain.rounds import quarter_of, sample
from kefu_feedback.domain.survey import (
    AlreadyAnswered,
    Answer,
    SkipReason,
    Survey,
    SurveyCustomer,
    SurveyError,
    SurveyStatus,
    card_numbers_redacted,
    follow_up_for,
    skip_reason,
    survey_id_for,
)
from kefu_shared.contracts.feedback import Dimension, FollowUpRoute, SurveyKind
from kefu_shared.contracts.notifier import NotificationSuppressed

SHANGHAI = ZoneInfo("Asia/Shanghai")
CAL = BusinessCalendar(SHANGHAI, {d: (time(9), time(0)) for d in range(7)})
WEEK = KpiQuery(at(1, 16), at(8, 16))


# --- business hours and statistics --------------------------------------------------------


def test_a_night_wait_counts_only_the_minutes_the_shop_was_open() -> None:
    # 23:50 local Monday to 09:05 Tuesday: 10 minutes before midnight, 5 after opening.
    assert CAL.business_seconds(at(2, 15, 50), at(3, 1, 5)) == 15 * 60


def test_holidays_and_closed_weekdays_count_nothing() -> None:
    cal = BusinessCalendar(
        SHANGHAI, {0: (time(9), time(18))}, holidays=frozenset({date(2026, 3, 9)})
    )
    # Monday 2 March 09:00-18:00 local is open; Tuesday is closed; Monday 9 March a holiday.
    assert cal.business_seconds(at(2, 0), at(10, 0)) == 9 * 3600


def test_the_packaged_calendar_is_the_shops_opening_hours() -> None:
    cal = load_calendar()
    assert cal.timezone == SHANGHAI
    assert cal.business_seconds(at(2, 1), at(2, 16)) == 15 * 3600


def test_percentiles_are_nearest_rank_values_that_occurred() -> None:
    values = [float(v) for v in range(1, 11)]
    assert (percentile(values, 50), percentile(values, 90)) == (5.0, 9.0)
    assert percentile([42.0], 90) == 42.0
    assert percentile([], 50) is None
    assert stats([3.0, 1.0, 2.0]).mean == 2.0


# --- KPIs ---------------------------------------------------------------------------------


def week_facts() -> list[Fact]:
    scripts, _ = the_week()
    return [f for s in scripts for e in s.events for f in facts_of_inquiry_event(e)]


def test_the_kpis_do_not_depend_on_the_order_the_facts_arrived_in() -> None:
    facts = week_facts()
    baseline = compute(WEEK, facts, [], CAL, KpiPolicy(), at(8, 10))
    for seed in range(5):
        shuffled = list(facts)
        random.Random(seed).shuffle(shuffled)
        assert compute(WEEK, shuffled, [], CAL, KpiPolicy(), at(8, 10)) == baseline
    assert baseline.first_response.clock.p50 == 4800
    assert [(s.sla, s.clocks, s.missed) for s in baseline.sla] == [
        ("first_response", 6, 2),
        ("next_response", 2, 1),
        ("resolution", 7, 1),
    ]


def test_a_late_next_response_is_missed_only_for_the_reply_that_ended_that_wait() -> None:
    script = (
        InquiryScript("X", "c1", "chat", "product")
        .opened(at(2, 2), "在吗")
        .reply(at(2, 2, 1), "A1", 60, first=True)
        .message(at(2, 3))
        .breached(at(2, 3, 2), "next_response", at(2, 3, 2), "A1")
        .reply(at(2, 3, 5), "A1", 300, first=False)
        .message(at(2, 4))
        .reply(at(2, 4, 1), "A1", 60, first=False)
    )
    facts = [f for e in script.events for f in facts_of_inquiry_event(e)]
    report = compute(WEEK, facts, [], CAL, KpiPolicy(), at(8, 10))
    nr = next(s for s in report.sla if s.sla == "next_response")
    assert (nr.clocks, nr.missed) == (2, 1)


def test_served_by_a_and_closed_by_b_counts_for_both_and_refunds_are_no_deals() -> None:
    script = (
        InquiryScript("X", "c1", "chat", "product")
        .opened(at(2, 2), "在吗")
        .reply(at(2, 2, 1), "A", 60, first=True)
        .message(at(2, 3))
        .reply(at(2, 3, 1), "B", 60, first=False)
    )
    after_sales = (
        InquiryScript("Y", "c2", "chat", "after_sales")
        .opened(at(2, 5), "退货")
        .reply(at(2, 5, 1), "A", 60, first=True)
    )
    facts = [f for s in (script, after_sales) for e in s.events for f in facts_of_inquiry_event(e)]
    deal = Fact("deal:O1:1", FactKind.DEAL, at(2, 4), agent_id="B", order_id="O1", revision=1)
    refunded_deal = Fact(
        "deal:O2:1", FactKind.DEAL, at(2, 4), agent_id="A", order_id="O2", revision=1
    )
    cancel = Fact("deal_cancelled:O2", FactKind.DEAL_CANCELLED, at(9, 1), order_id="O2")
    report = compute(WEEK, [*facts, deal, refunded_deal, cancel], [], CAL, KpiPolicy(), at(8, 10))
    agents = {a.agent_id: a for a in report.agents}
    assert (agents["A"].served, agents["A"].deals) == (1, 0)  # c2 is after-sales: not served
    assert (agents["B"].served, agents["B"].deals) == (1, 1)
    assert agents["B"].conversion_points == pytest.approx((100 - 55) * 0.5)
    assert agents["A"].conversion_points == pytest.approx(-55 * 0.5)


def test_the_same_question_asked_differently_is_one_knowledge_base_miss() -> None:
    assert normalise_question(GIFT_BOX) == normalise_question("这款酒有礼盒装吗?")
    assert normalise_question("Order 12345 where is it?") == normalise_question(
        "order 99 where is it"
    )


# --- surveys ------------------------------------------------------------------------------


def survey(
    status: SurveyStatus = SurveyStatus.INVITED, kind: SurveyKind = SurveyKind.INQUIRY
) -> Survey:
    return Survey(
        survey_id="inquiry-I1",
        kind=kind,
        customer_id="c1",
        status=status,
        case_at=at(2, 2),
        created_at=at(2, 2),
    )


def answer(overall: int, **ratings: int) -> Answer:
    return Answer(
        overall=overall,
        ratings={Dimension(k): v for k, v in ratings.items()},
        source="link",
        answered_at=at(3, 1),
    )


def test_a_low_rating_goes_to_a_supervisor_or_after_sales_by_what_was_rated_low() -> None:
    policy = SurveyPolicy()
    assert follow_up_for(SurveyKind.INQUIRY, answer(4, price=4), policy) is None
    slow = follow_up_for(SurveyKind.INQUIRY, answer(2, service_efficiency=1), policy)
    assert slow is not None
    assert (slow.route, slow.low_dimensions) == (
        FollowUpRoute.SUPERVISOR,
        ["overall", "service_efficiency"],
    )
    broken = follow_up_for(SurveyKind.INQUIRY, answer(4, product_quality=2), policy)
    assert broken is not None
    assert broken.route is FollowUpRoute.AFTER_SALES
    case = follow_up_for(SurveyKind.AFTERSALES, answer(1), policy)
    assert case is not None
    assert case.route is FollowUpRoute.AFTER_SALES


def test_a_survey_is_answered_once_the_same_answer_again_changes_nothing() -> None:
    answered = survey().answered(answer(5), SurveyPolicy())
    assert answered.status is SurveyStatus.ANSWERED
    assert answered.answered(answer(5), SurveyPolicy()) is answered
    with pytest.raises(AlreadyAnswered, match="survey_id"):
        answered.answered(answer(3), SurveyPolicy())
    with pytest.raises(SurveyError, match="not sent"):
        survey(SurveyStatus.SKIPPED).answered(answer(5), SurveyPolicy())


def test_late_delivery_reports_never_undo_an_answer() -> None:
    answered = survey().answered(answer(5), SurveyPolicy())
    assert answered.undeliverable("failed: x") is answered
    delivered = answered.delivered(at(2, 3), "sms")
    assert delivered.status is SurveyStatus.ANSWERED
    assert delivered.notification_channel == "sms"


def test_who_may_be_surveyed_now() -> None:
    policy = SurveyPolicy(cooldown_days=30, max_age_hours=72)
    now = at(10, 0)
    fresh = SurveyCustomer(customer_id="c1")
    assert skip_reason(fresh, "s1", at(9, 0), now, policy) is None
    opted = fresh.model_copy(update={"opted_out": True})
    assert skip_reason(opted, "s1", at(9, 0), now, policy) is SkipReason.OPTED_OUT
    assert skip_reason(fresh, "s1", at(5, 0), now, policy) is SkipReason.TOO_OLD
    recent = fresh.model_copy(update={"last_invited_at": at(9, 12), "last_survey_id": "s0"})
    # Either direction: the older case's event may come second.
    assert skip_reason(recent, "s1", at(9, 0), now, policy) is SkipReason.RECENTLY_SURVEYED
    mine = recent.model_copy(update={"last_survey_id": "s1"})
    assert skip_reason(mine, "s1", at(9, 0), now, policy) is None


def test_survey_ids_are_safe_keys_and_links_only_open_with_their_token() -> None:
    assert survey_id_for(SurveyKind.INQUIRY, "inq-1") == "inquiry-inq-1"
    odd = survey_id_for(SurveyKind.ROUND, "客户 1/2", round_id="2026-Q2")
    assert odd.startswith("round-2026-Q2-")
    assert " " not in odd
    assert "/" not in odd
    links = SurveyLinks("https://shop.example/fb/", "k")
    url = links.url("inquiry-inq-1")
    assert url.startswith("https://shop.example/fb/surveys/inquiry-inq-1?token=")
    assert links.verify("inquiry-inq-1", url.rsplit("=", 1)[1])
    assert not links.verify("inquiry-inq-2", url.rsplit("=", 1)[1])


def test_card_numbers_never_stay_in_a_comment() -> None:
    assert card_numbers_redacted("卡号 6222 0212 3456 7890 123 请退款") == (
        "卡号 [card number removed] 请退款"
    )
    assert card_numbers_redacted("订单 12345 还没到") == "订单 12345 还没到"


def test_a_round_sample_is_the_same_for_the_same_round_and_differs_between_rounds() -> None:
    people = [f"c{n}" for n in range(100)]
    first = sample(people, 10, "2026-Q1")
    assert first == sample(reversed(people), 10, "2026-Q1")
    assert len(first) == 10
    assert first != sample(people, 10, "2026-Q2")
    assert sample(people[:3], 10, "x") == ["c0", "c1", "c2"]
    assert quarter_of(datetime(2026, 5, 1, tzinfo=UTC)) == "2026-Q2"


# --- use cases with in-memory stores ------------------------------------------------------


async def resolve(deps: handlers.Deps, inquiry_id: str, customer: str, when: datetime) -> None:
    script = (
        InquiryScript(inquiry_id, customer, "chat", "product", language="en")
        .opened(when - timedelta(minutes=5), "hello")
        .reply(when - timedelta(minutes=4), "A1", 60, first=True)
        .resolved(when, "A1")
    )
    for event in script.events:
        await handlers.record_inquiry_event(event, handlers.Context("corr", "cause"), deps)


async def test_a_resolved_inquiry_puts_one_invitation_in_the_outbox() -> None:
    deps = fake_deps(at(10, 12))
    await resolve(deps, "I1", "c1", at(10, 11))
    await resolve(deps, "I1", "c1", at(10, 11))  # redelivered history
    outbox = deps.surveys.outbox  # type: ignore[attr-defined]
    assert [m.topic for m in outbox] == ["test.kefu.notifier.requests"]
    assert '"language":"en"' in outbox[0].body
    assert '"idempotency_key":"inquiry-I1"' in outbox[0].body


async def test_an_opt_out_reported_by_the_notifier_stops_all_later_surveys() -> None:
    deps = fake_deps(at(10, 12))
    await resolve(deps, "I1", "c1", at(10, 11))
    suppressed = NotificationSuppressed(
        idempotency_key="inquiry-I1",
        delivery_id="d1",
        customer_id="c1",
        purpose="survey_invitation",  # type: ignore[arg-type]
        template="survey_invitation",
        requested_by="feedback",
        reason="opted_out_purpose",  # type: ignore[arg-type]
        suppressed_at=at(10, 11),
    )
    await handlers.record_delivery(suppressed, handlers.Context(causation_id="n1"), deps)
    assert (await handlers.get_customer("c1", deps)).opted_out
    deps.clock = lambda: at(12, 12)
    deps.policy = deps.policy.model_copy(
        update={"survey": deps.policy.survey.model_copy(update={"cooldown_days": 0})}
    )
    await resolve(deps, "I2", "c1", at(12, 11))
    second = await handlers.load_survey("inquiry-I2", deps)
    assert second is not None
    assert (second.status, second.reason) == (SurveyStatus.SKIPPED, "opted_out")


async def test_an_answer_is_published_once_with_its_follow_up() -> None:
    deps = fake_deps(at(10, 12))
    await resolve(deps, "I1", "c1", at(10, 11))
    surveys: FakeDocuments = deps.surveys  # type: ignore[assignment]
    before = len(surveys.outbox)
    low = answer(2, price=1)
    await handlers.answer_survey("inquiry-I1", low, "sub-1", deps)
    await handlers.answer_survey("inquiry-I1", low, "sub-1", deps)
    await handlers.answer_survey("inquiry-I1", low, "sub-2", deps)
    types = [m.headers["ce_type"] for m in surveys.outbox[before:]]
    assert types == ["kefu.survey.answered.v1", "kefu.survey.follow_up_raised.v1"]


def test_durations_read_like_a_person_would_say_them() -> None:
    assert [duration(s) for s in (None, 0.44, 42, 90, 3600, 3 * 3600 + 25 * 60)] == [
        "–",
        "0.4 s",
        "42 s",
        "1 min 30 s",
        "1 h",
        "3 h 25 min",
    ]


def test_the_markdown_report_names_its_charts() -> None:
    from kefu_feedback.adapters.report import kpi_document

    report = compute(WEEK, week_facts(), [], CAL, KpiPolicy(), at(8, 10))
    doc = kpi_document(report, "Asia/Shanghai", 55.0)
    text, images = render_markdown(doc, "charts")
    assert sorted(images) == ["csat_by_dimension.png", "peak_hours.png", "response_times.png"]
    assert "![Peak hours](charts/peak_hours.png)" in text
    assert "## Weak points" in text
