"""Unit tests of the notifier's rules: templates, signatures, quiet hours, rate limit, backoff."""

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import jinja2.meta
import pytest
from kefu_notifier.adapters.rendering import TEMPLATE_DIR, JinjaRenderer
from kefu_notifier.domain.catalogue import (
    AFTERSALES_STATES,
    TEMPLATE_PURPOSES,
    ChannelKind,
    Purpose,
)
from kefu_notifier.domain.delivery import Content, Delivery, DeliveryNotDue, DeliveryStatus
from kefu_notifier.domain.policies import (
    Backoff,
    Preferences,
    QuietHours,
    RateLimit,
    Route,
    decide_attempt,
    judge,
    routes_for,
)
from kefu_notifier.domain.ports import TemplateError
from kefu_notifier.domain.signature import sign, verify_signature

LANGUAGES = ("zh-CN", "en")
SHANGHAI = ZoneInfo("Asia/Shanghai")

SAMPLES: dict[str, dict[str, Any]] = {
    "inquiry_acknowledgement": {"inquiry_id": "INQ-7"},
    "inquiry_reply": {"inquiry_id": "INQ-7", "agent_name": "小王", "reply": "已为您加急处理"},
    "bot_answer": {"question": "多久发货", "answer": "下单后 48 小时内发货"},
    "payment_reminder": {
        "order_id": "O-1",
        "amount": "199.00",
        "currency": "CNY",
        "pay_before": "2026-11-11 23:59",
    },
    "shipping_notice": {"order_id": "O-1", "carrier": "顺丰速运", "tracking_number": "SF1234567"},
    "survey_invitation": {"survey_url": "https://shop.example/s/abc"},
    "verification_code": {"code": "482913", "valid_minutes": 5},
    "order_change_confirmation": {"order_id": "O-1", "change": "收货地址改为上海市"},
}
AFTERSALES_EXTRA: dict[str, dict[str, Any]] = {
    "rejected": {"reason": "超过七天无理由退货期"},
    "awaiting_return_parcel": {"return_address": "杭州市余杭区 1 号"},
    "inspected": {"result": "商品完好"},
    "refunded": {"amount": "99.00", "currency": "CNY"},
    "exchanged": {"carrier": "中通", "tracking_number": "ZT987"},
}
for _state in AFTERSALES_STATES:
    SAMPLES[f"aftersales_{_state}"] = {
        "case_id": "AS-3",
        "order_id": "O-1",
        **AFTERSALES_EXTRA.get(_state, {}),
    }

renderer = JinjaRenderer()


def declared_parameters(template: str, language: str) -> set[str]:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR))
    source = (TEMPLATE_DIR / language / f"{template}.txt.j2").read_text()
    return jinja2.meta.find_undeclared_variables(env.parse(source))


def test_the_catalogue_has_a_template_file_per_language_and_nothing_else() -> None:
    for language in LANGUAGES:
        assert renderer.names(language) == sorted(TEMPLATE_PURPOSES)
    assert set(SAMPLES) == set(TEMPLATE_PURPOSES)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", sorted(TEMPLATE_PURPOSES))
def test_every_template_renders_a_subject_and_a_body_with_every_parameter(
    template: str, language: str
) -> None:
    content = renderer.render(template, language, SAMPLES[template])
    assert content.subject
    assert "\n" not in content.subject
    assert content.body
    for value in SAMPLES[template].values():
        assert str(value) in content.subject + content.body
    # Both languages ask for the same parameters, so a requester needs one parameter set.
    assert declared_parameters(template, language) == set(SAMPLES[template])


def test_shipping_notice_names_the_carrier_and_the_tracking_number() -> None:
    content = renderer.render("shipping_notice", "zh-CN", SAMPLES["shipping_notice"])
    assert content.subject == "订单 O-1 已发货"
    assert "承运商：顺丰速运" in content.body
    assert "运单号：SF1234567" in content.body


@pytest.mark.parametrize("template", sorted(TEMPLATE_PURPOSES))
def test_a_missing_parameter_is_an_error_not_a_blank(template: str) -> None:
    for missing in SAMPLES[template]:
        params = {k: v for k, v in SAMPLES[template].items() if k != missing}
        with pytest.raises(TemplateError, match="missing parameter"):
            renderer.render(template, "en", params)


def test_an_unknown_template_or_language_is_an_error() -> None:
    with pytest.raises(TemplateError, match="unknown template"):
        renderer.render("lottery_win", "en", {})
    with pytest.raises(TemplateError, match="unknown template"):
        renderer.render("shipping_notice", "fr", SAMPLES["shipping_notice"])
    with pytest.raises(TemplateError, match="unknown template"):
        renderer.render("../en/shipping_notice", "en", SAMPLES["shipping_notice"])


def test_a_signature_verifies_and_any_change_breaks_it() -> None:
    body = b'{"delivery_id":"dlv_1"}'
    signature = sign("s3cret", "1700000000", body)
    assert signature.startswith("v1=")
    assert verify_signature("s3cret", "1700000000", body, signature, 300, now=1700000100)
    assert not verify_signature("other", "1700000000", body, signature, 300, now=1700000100)
    assert not verify_signature("s3cret", "1700000000", body + b" ", signature, 300, now=1700000100)
    assert not verify_signature("s3cret", "1700000001", body, signature, 300, now=1700000100)
    # Too old (a replay) or from the future beyond the tolerance.
    assert not verify_signature("s3cret", "1700000000", body, signature, 300, now=1700000301)
    assert not verify_signature("s3cret", "1700000000", body, signature, 300, now=1699999699)
    assert not verify_signature("s3cret", "yesterday", body, signature, 300, now=1700000000)


QUIET = QuietHours(time(22), time(8), SHANGHAI, frozenset({ChannelKind.SMS}))


def local(hour: int, minute: int = 0, day: int = 10) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


def test_quiet_hours_span_midnight_in_the_shops_time_zone() -> None:
    assert QUIET.contains(local(22))
    assert QUIET.contains(local(2))
    assert QUIET.contains(local(7, 59))
    assert not QUIET.contains(local(8))
    assert not QUIET.contains(local(21, 59))
    # 15:00 UTC is 23:00 in Shanghai.
    assert QUIET.contains(datetime(2026, 11, 10, 15, tzinfo=UTC))


def test_an_sms_in_quiet_hours_waits_for_the_morning_other_channels_do_not() -> None:
    assert QUIET.deferral_until(local(23), ChannelKind.SMS) == local(8, day=11)
    assert QUIET.deferral_until(local(3, day=11), ChannelKind.SMS) == local(8, day=11)
    assert QUIET.deferral_until(local(12), ChannelKind.SMS) is None
    assert QUIET.deferral_until(local(23), ChannelKind.EMAIL) is None
    daytime = QuietHours(time(12), time(14), SHANGHAI, frozenset({ChannelKind.SMS}))
    assert daytime.deferral_until(local(13), ChannelKind.SMS) == local(14)
    assert QuietHours(time(8), time(8), SHANGHAI).deferral_until(local(3), ChannelKind.SMS) is None


def test_the_rate_limit_defers_until_the_oldest_counted_send_leaves_the_window() -> None:
    limit = RateLimit(2, timedelta(hours=1))
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    sent = [now - timedelta(minutes=50), now - timedelta(minutes=10), now - timedelta(hours=3)]
    assert limit.recent(sent, now) == sorted(sent[:2])
    assert limit.next_slot(sent, now) == now + timedelta(minutes=10)
    assert limit.next_slot(sent[1:], now) is None
    assert limit.next_slot([], now) is None


def test_backoff_doubles_up_to_the_cap_and_stops_after_the_last_attempt() -> None:
    backoff = Backoff(timedelta(seconds=30), timedelta(minutes=3), max_attempts=5)
    delays = [backoff.delay(n).total_seconds() for n in range(1, 6)]
    assert delays == [30, 60, 120, 180, 180]
    assert not backoff.exhausted(4)
    assert backoff.exhausted(5)


def test_routes_start_with_the_preferred_channel_and_need_an_address_and_a_provider() -> None:
    addresses = {ChannelKind.SMS: "+8613800000000", ChannelKind.EMAIL: "a@b.cn"}
    order = (ChannelKind.WECHAT, ChannelKind.EMAIL, ChannelKind.SMS)
    available = {ChannelKind.SMS, ChannelKind.EMAIL, ChannelKind.WECHAT}
    assert [r.channel for r in routes_for(addresses, available, ChannelKind.SMS, order)] == [
        ChannelKind.SMS,
        ChannelKind.EMAIL,
    ]
    assert [r.channel for r in routes_for(addresses, {ChannelKind.SMS}, None, order)] == [
        ChannelKind.SMS
    ]
    assert routes_for({}, available, ChannelKind.SMS, order) == []


ROUTES = (Route(ChannelKind.SMS, "+8613800000000"), Route(ChannelKind.EMAIL, "a@b.cn"))


def test_opt_out_suppresses_a_purpose_skips_a_channel_and_spares_transactional_notices() -> None:
    noon = local(12)
    no_survey = Preferences(opted_out_purposes=frozenset({Purpose.SURVEY_INVITATION}))
    decision = decide_attempt(
        purpose=Purpose.SURVEY_INVITATION,
        routes=ROUTES,
        preferences=no_survey,
        quiet_hours=QUIET,
        transactional=False,
        now=noon,
    )
    assert decision.suppress_reason == "opted_out_purpose"
    no_sms = Preferences(opted_out_channels=frozenset({ChannelKind.SMS}))
    decision = decide_attempt(
        purpose=Purpose.SHIPPING_NOTICE,
        routes=ROUTES,
        preferences=no_sms,
        quiet_hours=QUIET,
        transactional=False,
        now=noon,
    )
    assert decision.send == ROUTES[1]
    nothing = Preferences(opted_out_channels=frozenset({ChannelKind.SMS, ChannelKind.EMAIL}))
    decision = decide_attempt(
        purpose=Purpose.SHIPPING_NOTICE,
        routes=ROUTES,
        preferences=nothing,
        quiet_hours=QUIET,
        transactional=False,
        now=noon,
    )
    assert decision.suppress_reason == "opted_out_channel"
    decision = decide_attempt(
        purpose=Purpose.VERIFICATION_CODE,
        routes=ROUTES,
        preferences=nothing,
        quiet_hours=QUIET,
        transactional=True,
        now=local(23),
    )
    assert decision.send == ROUTES[0]
    assert decision.defer_until is None


def test_quiet_hours_defer_the_route_that_would_be_used() -> None:
    decision = decide_attempt(
        purpose=Purpose.SHIPPING_NOTICE,
        routes=ROUTES,
        preferences=Preferences(),
        quiet_hours=QUIET,
        transactional=False,
        now=local(23),
    )
    assert decision.send == ROUTES[0]
    assert decision.defer_until == local(8, day=11)
    assert decision.defer_reason == "quiet_hours"


def make_delivery(now: datetime) -> Delivery:
    return Delivery.requested(
        idempotency_key="k-1",
        customer_id="c-1",
        purpose=Purpose.SHIPPING_NOTICE,
        template="shipping_notice",
        language="en",
        requested_by="orders",
        correlation_id="corr",
        request_message_id="m-1",
        routes=ROUTES,
        content=Content("s", "b"),
        now=now,
    )


def test_a_delivery_retries_with_backoff_then_fails_and_a_sent_one_is_final() -> None:
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    backoff = Backoff(timedelta(seconds=1), timedelta(seconds=10), max_attempts=2)
    delivery = make_delivery(now)
    assert delivery.delivery_id == make_delivery(now + timedelta(days=1)).delivery_id
    claimed = delivery.claim(now, timedelta(minutes=2))
    assert claimed.status is DeliveryStatus.SENDING
    assert not claimed.is_due(now + timedelta(minutes=1))
    assert claimed.is_due(now + timedelta(minutes=2))  # a crashed sender's lease expires
    retry = claimed.attempt_failed(ChannelKind.SMS, "503", retryable=True, backoff=backoff, now=now)
    assert (retry.status, retry.attempts) == (DeliveryStatus.PENDING, 1)
    assert retry.next_attempt_at == now + timedelta(seconds=1)
    with pytest.raises(DeliveryNotDue):
        retry.claim(now, timedelta(minutes=2))
    later = now + timedelta(seconds=1)
    failed = retry.claim(later, timedelta(minutes=2)).attempt_failed(
        ChannelKind.SMS, "503", retryable=True, backoff=backoff, now=later
    )
    assert (failed.status, failed.reason, failed.attempts) == (
        DeliveryStatus.FAILED,
        "retries_exhausted",
        2,
    )
    rejected = claimed.attempt_failed(
        ChannelKind.SMS, "400 bad number", retryable=False, backoff=backoff, now=now
    )
    assert rejected.reason == "provider_rejected"
    sent = claimed.succeeded(ChannelKind.SMS, "p-1", now)
    assert sent.final
    assert not sent.is_due(now + timedelta(days=365))
    with pytest.raises(DeliveryNotDue):
        sent.claim(now + timedelta(days=1), timedelta(minutes=2))


def test_a_verdict_takes_a_rate_limit_slot_only_when_the_notice_goes_now() -> None:
    now = datetime(2026, 11, 10, 4, tzinfo=UTC)  # noon in Shanghai
    lease = timedelta(minutes=2)
    limit = RateLimit(2, timedelta(hours=1))
    full = [now - timedelta(minutes=50), now - timedelta(minutes=10)]

    def verdict(purpose: Purpose, sent: list[datetime], at: datetime = now, **prefs: Any) -> Any:
        return judge(
            purpose=purpose,
            routes=ROUTES,
            preferences=Preferences(**prefs),
            recent_sends=sent,
            quiet_hours=QUIET,
            rate_limit=limit,
            transactional=purpose is Purpose.VERIFICATION_CODE,
            now=at,
        )

    goes = verdict(Purpose.SHIPPING_NOTICE, [*full[1:], now - timedelta(hours=2)])
    assert goes.sends_now
    assert goes.route == ROUTES[0]
    assert goes.recent_sends == (full[1], now)  # the expired send is forgotten
    claimed = make_delivery(now).judged(goes, now, lease)
    assert (claimed.status, claimed.next_attempt_at) == (DeliveryStatus.SENDING, now + lease)

    waits = verdict(Purpose.SHIPPING_NOTICE, full)
    assert not waits.sends_now
    deferred = make_delivery(now).judged(waits, now, lease)
    assert (deferred.status, deferred.reason) == (DeliveryStatus.DEFERRED, "rate_limit")
    assert deferred.next_attempt_at == full[0] + timedelta(hours=1)

    code = verdict(Purpose.VERIFICATION_CODE, full)  # transactional: goes, and still counts
    assert code.recent_sends == (*full, now)

    opted_out = verdict(
        Purpose.SHIPPING_NOTICE, [], opted_out_purposes=frozenset({Purpose.SHIPPING_NOTICE})
    )
    suppressed = make_delivery(now).judged(opted_out, now, lease)
    assert (suppressed.status, opted_out.recent_sends) == (DeliveryStatus.SUPPRESSED, None)

    night = now + timedelta(hours=12)  # midnight in Shanghai: the SMS waits, takes no slot
    at_night = verdict(Purpose.SHIPPING_NOTICE, [], at=night)
    assert (at_night.defer_reason, at_night.recent_sends) == ("quiet_hours", None)
    with pytest.raises(DeliveryNotDue):  # a verdict applies only to a delivery still due
        claimed.judged(goes, now, lease)


def test_quiet_hours_with_an_offset_of_their_own_stop_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kefu_notifier.settings import NotifierSettings
    from kefu_shared.settings import SettingsError, load_settings

    monkeypatch.setenv("KEFU_NOTIFIER_QUIET_HOURS_START", "22:00+08:00")
    with pytest.raises(SettingsError, match="QUIET_HOURS_START") as info:
        load_settings(NotifierSettings)
    assert "without an offset" in str(info.value)
