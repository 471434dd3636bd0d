"""Unit tests of webhook subscriptions: patterns, SSRF checks, lifecycles, signing headers."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from kefu_notifier.adapters.webhook_http import HttpWebhookPoster, ResolvingTargetGuard
from kefu_notifier.domain.event_patterns import is_valid_pattern, matches
from kefu_notifier.domain.policies import Backoff
from kefu_notifier.domain.signature import verify_signature
from kefu_notifier.domain.webhook_delivery import (
    WebhookDelivery,
    WebhookDeliveryNotDue,
    WebhookDeliveryStatus,
    webhook_delivery_id,
)
from kefu_notifier.domain.webhook_ports import WebhookAttemptFailed, WebhookRequest
from kefu_notifier.domain.webhook_subscription import (
    DisablePolicy,
    Subscription,
    SubscriptionConflict,
    SubscriptionStatus,
    new_secret,
)
from kefu_notifier.domain.webhook_targets import (
    TargetRefused,
    address_refusal,
    check_addresses,
    parse_target,
)

NOW = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("inquiry.received", "inquiry.received", True),
        ("inquiry.received", "inquiry.resolved", False),
        ("inquiry.*", "inquiry.sla_breached", True),
        ("inquiry.*", "inquiry.sla.breached", True),
        ("inquiry.*", "inquiry", False),
        ("inquiry.*", "inquiryx.received", False),
        ("inquiry.*", "orders.paid", False),
        ("*", "aftersales.refund_issued", True),
        ("*.failed", "notification.failed", True),
        ("*.failed", "notification.sent", False),
        ("*.failed", "a.b.failed", False),
        ("notification.sent", "notification.sent.extra", False),
    ],
)
def test_event_type_patterns_select_by_dotted_segments(
    pattern: str, event_type: str, expected: bool
) -> None:
    assert matches(pattern, event_type) is expected


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        ("inquiry.*", True),
        ("*", True),
        ("webhook.subscription_disabled", True),
        ("Inquiry.Received", False),
        ("inquiry.", False),
        ("inquiry.**", False),
        ("inquiry received", False),
        ("", False),
        ("a." * 60 + "b", False),
    ],
)
def test_only_well_formed_patterns_are_accepted(pattern: str, valid: bool) -> None:
    assert is_valid_pattern(pattern) is valid


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "address"),
    ],
)
def test_non_public_addresses_are_refused_with_the_reason(address: str, refusal: str) -> None:
    reason = address_refusal(address)
    assert reason is not None
    assert refusal in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "1.1.1.1"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(address) is None


def test_a_host_with_one_private_address_among_public_ones_is_refused() -> None:
    target = parse_target("https://hooks.example.com/kefu")
    check_addresses(target, ["93.184.215.14"])
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.7 is a private address"):
        check_addresses(target, ["93.184.215.14", "10.0.0.7"])
    with pytest.raises(TargetRefused, match="does not resolve"):
        check_addresses(target, [])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("gopher://example.com", "scheme 'gopher'"),
        ("example.com/hook", "scheme '(none)'"),
        ("http:///path-only", "has no host"),
        ("https://user:pw@example.com/", "must not contain credentials"),
        ("http://example.com:99999/", "not a valid URL"),
        ("https://example.com/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_only_plain_http_urls_with_a_host_are_targets(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        parse_target(url)
    assert str(refused.value).startswith("target_url: ")
    assert reason in str(refused.value)


def test_a_target_keeps_its_default_port() -> None:
    assert parse_target("https://hooks.example.com/a?b=1").port == 443
    assert parse_target("http://hooks.example.com:8080/").port == 8080


async def test_the_guard_refuses_loopback_unless_private_targets_are_allowed() -> None:
    strict = ResolvingTargetGuard(allow_private=False)
    relaxed = ResolvingTargetGuard(allow_private=True)
    with pytest.raises(TargetRefused, match="loopback"):
        await strict.check("http://127.0.0.1:8080/hook")
    with pytest.raises(TargetRefused, match="link-local"):
        await strict.check("http://169.254.169.254/latest/meta-data/")
    assert (await relaxed.check("http://127.0.0.1:8080/hook")).host == "127.0.0.1"
    with pytest.raises(TargetRefused, match="scheme"):
        await relaxed.check("ftp://127.0.0.1/")
    assert (await strict.check("https://93.184.215.14/hook")).port == 443
    assert strict.enforcing
    assert not relaxed.enforcing


def subscription(**changes: object) -> Subscription:
    created = Subscription.create(
        subscription_id="wh_1",
        target_url="https://hooks.example.com/kefu",
        event_types=("inquiry.*", "order.paid", "inquiry.*"),
        secret="whsec_0123456789abcdef",
        description="CRM",
        created_by="crm-sync",
        now=NOW,
    )
    return replace(created, **changes)  # type: ignore[arg-type]


def test_a_subscription_wants_matching_events_from_its_creation_on() -> None:
    sub = subscription()
    grace = timedelta(minutes=5)
    assert sub.event_types == ("inquiry.*", "order.paid")
    assert sub.wants("inquiry.received", NOW, grace)
    assert sub.wants("order.paid", NOW - timedelta(minutes=4), grace)
    assert not sub.wants("order.paid", NOW - timedelta(hours=1), grace)  # retained history
    assert not sub.wants("order.shipped", NOW, grace)
    assert sub.pause(NOW).wants("inquiry.received", NOW, grace)  # kept for the resume
    disabled = subscription(status=SubscriptionStatus.DISABLED)
    assert not disabled.wants("inquiry.received", NOW, grace)
    assert not sub.delete(NOW).wants("inquiry.received", NOW, grace)


def test_a_subscription_needs_well_formed_event_types() -> None:
    with pytest.raises(ValueError, match="event_types"):
        Subscription.create(
            subscription_id="wh_2",
            target_url="https://hooks.example.com/kefu",
            event_types=("Inquiry Received",),
            secret="whsec_0123456789abcdef",
            description="",
            created_by="crm",
            now=NOW,
        )


def test_the_api_sees_only_the_last_characters_of_the_secret() -> None:
    assert subscription().secret_hint == "…cdef"
    generated = new_secret()
    assert generated.startswith("whsec_")
    assert len(generated) > 40
    assert generated != new_secret()


def test_failures_disable_only_after_enough_of_them_over_enough_time() -> None:
    policy = DisablePolicy(after_failures=3, after=timedelta(minutes=10))
    sub = subscription()
    for minute in (0, 1, 2):  # three failures, but within two minutes
        sub = sub.delivery_failed("HTTP 503", NOW + timedelta(minutes=minute), policy)
    assert (sub.status, sub.consecutive_failures, sub.failing_since) == (
        SubscriptionStatus.ACTIVE,
        3,
        NOW,
    )
    sub = sub.delivery_failed("HTTP 503", NOW + timedelta(minutes=10), policy)
    assert sub.status is SubscriptionStatus.DISABLED
    assert (sub.disabled_reason, sub.last_error) == ("consecutive_failures", "HTTP 503")
    assert sub.disabled_at == NOW + timedelta(minutes=10)


def test_a_success_resets_the_failure_streak() -> None:
    policy = DisablePolicy(after_failures=2, after=timedelta(0))
    sub = subscription().delivery_failed("timed out", NOW, policy)
    sub = sub.delivery_succeeded(NOW + timedelta(seconds=1))
    assert (sub.consecutive_failures, sub.failing_since) == (0, None)
    sub = sub.delivery_failed("timed out", NOW + timedelta(seconds=2), policy)
    assert sub.status is SubscriptionStatus.ACTIVE


def test_pause_resume_and_delete_follow_the_lifecycle() -> None:
    policy = DisablePolicy(after_failures=1, after=timedelta(0))
    paused = subscription().pause(NOW)
    assert paused.status is SubscriptionStatus.PAUSED
    assert paused.pause(NOW) == paused
    # A failure of a delivery that was in flight when it was paused does not disable it.
    assert paused.delivery_failed("HTTP 500", NOW, policy).status is SubscriptionStatus.PAUSED
    disabled = subscription().delivery_failed("HTTP 500", NOW, policy)
    with pytest.raises(SubscriptionConflict, match="resume it first"):
        disabled.pause(NOW)
    resumed = disabled.resume(NOW)
    assert (resumed.status, resumed.consecutive_failures, resumed.disabled_reason) == (
        SubscriptionStatus.ACTIVE,
        0,
        None,
    )
    deleted = resumed.delete(NOW)
    assert (deleted.status, deleted.secret) == (SubscriptionStatus.DELETED, "")
    with pytest.raises(SubscriptionConflict):
        deleted.resume(NOW)


def delivery() -> WebhookDelivery:
    return WebhookDelivery.record(
        subscription_id="wh_1",
        event_id="evt-1",
        event_type="inquiry.received",
        event_source="inquiry",
        event_subject="INQ-1",
        correlation_id="corr-1",
        body='{"id":"evt-1"}',
        now=NOW,
    )


def test_the_delivery_id_is_the_same_for_the_same_subscription_and_event() -> None:
    assert delivery().delivery_id == webhook_delivery_id("wh_1", "evt-1")
    assert webhook_delivery_id("wh_1", "evt-1") != webhook_delivery_id("wh_2", "evt-1")
    assert webhook_delivery_id("wh_1", "evt-1") != webhook_delivery_id("wh_1", "evt-2")


def test_failed_attempts_back_off_exponentially_then_fail_for_good() -> None:
    backoff = Backoff(initial=timedelta(seconds=10), cap=timedelta(seconds=25), max_attempts=3)
    lease = timedelta(seconds=60)
    d = delivery().claim(NOW, lease)
    assert (d.status, d.next_attempt_at) == (WebhookDeliveryStatus.SENDING, NOW + lease)
    d = d.attempt_failed("HTTP 503", 503, backoff=backoff, now=NOW)
    assert (d.status, d.attempts, d.next_attempt_at) == (
        WebhookDeliveryStatus.PENDING,
        1,
        NOW + timedelta(seconds=10),
    )
    assert not d.is_due(NOW + timedelta(seconds=9))
    later = NOW + timedelta(seconds=10)
    d = d.claim(later, lease).attempt_failed("HTTP 503", 503, backoff=backoff, now=later)
    assert d.next_attempt_at == later + timedelta(seconds=20)
    last = later + timedelta(seconds=20)
    d = d.claim(last, lease).attempt_failed("timed out", None, backoff=backoff, now=last)
    assert (d.status, d.attempts, d.next_attempt_at, d.last_error) == (
        WebhookDeliveryStatus.FAILED,
        3,
        None,
        "timed out",
    )
    with pytest.raises(WebhookDeliveryNotDue):
        d.claim(last + timedelta(days=1), lease)


def test_a_delivered_delivery_is_final() -> None:
    d = delivery().claim(NOW, timedelta(seconds=60)).succeeded(204, NOW)
    assert (d.status, d.attempts, d.last_status_code, d.delivered_at) == (
        WebhookDeliveryStatus.DELIVERED,
        1,
        204,
        NOW,
    )
    assert not d.is_due(NOW + timedelta(days=1))
    with pytest.raises(WebhookDeliveryNotDue):
        d.succeeded(200, NOW)


def webhook_request(attempt: int = 1) -> WebhookRequest:
    return WebhookRequest(
        url="https://hooks.example.com/kefu",
        body=b'{"id":"evt-1","type":"inquiry.received"}',
        secret="whsec_0123456789abcdef",
        delivery_id="whd_1",
        subscription_id="wh_1",
        event_id="evt-1",
        event_type="inquiry.received",
        attempt=attempt,
    )


async def test_the_poster_signs_the_raw_body_and_names_the_delivery() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    poster = HttpWebhookPoster(timeout=1, transport=httpx.MockTransport(answer))
    assert await poster.post(webhook_request(attempt=2)) == 202
    await poster.aclose()
    [request] = seen
    h = request.headers
    assert request.content == webhook_request().body
    assert json.loads(request.content)["id"] == "evt-1"
    assert (h["x-kefu-delivery-id"], h["idempotency-key"]) == ("whd_1", "whd_1")
    assert (h["x-kefu-event-type"], h["x-kefu-subscription-id"]) == ("inquiry.received", "wh_1")
    assert h["x-kefu-attempt"] == "2"
    assert verify_signature(
        "whsec_0123456789abcdef", h["x-kefu-timestamp"], request.content, h["x-kefu-signature"]
    )
    assert not verify_signature(
        "whsec_0123456789abcdef", h["x-kefu-timestamp"], b"{}", h["x-kefu-signature"]
    )


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503, text="busy"), "HTTP 503: busy"),
        (httpx.Response(302, headers={"Location": "http://10.0.0.1/"}), "HTTP 302"),
        (httpx.Response(410), "HTTP 410"),
    ],
)
async def test_anything_but_a_2xx_is_a_failed_attempt(
    response: httpx.Response, message: str
) -> None:
    poster = HttpWebhookPoster(timeout=1, transport=httpx.MockTransport(lambda _: response))
    with pytest.raises(WebhookAttemptFailed) as failed:
        await poster.post(webhook_request())
    await poster.aclose()
    assert message in str(failed.value)
    assert failed.value.status_code == response.status_code


async def test_an_unreachable_receiver_is_a_failed_attempt() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    poster = HttpWebhookPoster(timeout=1, transport=httpx.MockTransport(refuse))
    with pytest.raises(WebhookAttemptFailed, match="unreachable: ConnectError"):
        await poster.post(webhook_request())
    await poster.aclose()
