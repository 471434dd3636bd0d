"""The notifier end to end on the real broker and store, with real SMTP and HTTP providers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from kefu_local.pytest_plugin import running
from kefu_notifier.bootstrap import create_app
from kefu_notifier.domain.signature import verify_signature
from kefu_notifier.settings import NotifierSettings
from kefu_shared import topics
from kefu_shared.testing import eventually, produce, read_topic
from notifier_testkit import FakeClock, HttpProvider, ReceivedRequest, SmtpServer, publish, request
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect

pytestmark = pytest.mark.integration

SettingsFactory = Callable[..., NotifierSettings]


@pytest.fixture
def make_settings(service_overrides: dict[str, Any]) -> SettingsFactory:
    def make(**extra: Any) -> NotifierSettings:
        values: dict[str, Any] = {
            **service_overrides,
            "log_unconfigured_channels": False,
            "dispatch_poll_seconds": 0.1,
            "delivery_initial_backoff_seconds": 0.1,
            "delivery_max_backoff_seconds": 0.4,
            "provider_timeout_seconds": 3,
            "quiet_hours_channels": [],
            **extra,
        }
        return NotifierSettings(**values)

    return make


Run = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def run(db: AsyncDatabase[dict[str, Any]]) -> Run:
    """``running(app)``, and before stopping it, wait until the outbox relay published all."""

    async def drained() -> bool:
        return await db["deliveries"].count_documents({"outbox_pending": True}) == 0

    @asynccontextmanager
    async def run_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        async with running(app) as client:
            yield client
            await eventually(drained)

    return run_app


@pytest.fixture
def db(
    mongo_client: AsyncMongoClient[dict[str, Any]], service_overrides: dict[str, Any]
) -> AsyncDatabase[dict[str, Any]]:
    """The notifier's own database in this test."""
    return mongo_client[service_overrides["mongodb_database"]]


@pytest.fixture
def prefix(service_overrides: dict[str, Any]) -> str:
    return str(service_overrides["topic_prefix"])


async def status_of(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await client.get(f"/deliveries/{key}")
    return response.json() if response.status_code == 200 else {}


async def has_status(client: httpx.AsyncClient, key: str, status: str) -> bool:
    return (await status_of(client, key)).get("status") == status


async def events(kafka_bootstrap: str, prefix: str, expect: int) -> list[dict[str, Any]]:
    received = await read_topic(
        kafka_bootstrap, prefix + topics.NOTIFIER_EVENTS, expect=expect, settle=0.5
    )
    return [r.json() for r in received]


async def test_a_request_is_mailed_through_smtp_and_reported_sent(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    with SmtpServer() as smtp:
        settings = make_settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        envelope = request("ship-O-42")
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, envelope)
            await eventually(lambda: has_status(client, "ship-O-42", "sent"))
            log = await status_of(client, "ship-O-42")
            metrics = (await client.get("/metrics")).text

    [mail] = smtp.messages
    assert mail["To"] == "li.lei@example.cn"
    assert mail["Subject"] == "Your order O-42 has shipped"
    body = mail.get_content()
    assert "Carrier: SF Express" in body
    assert "Tracking number: SF100200" in body
    assert mail["X-Kefu-Delivery-Id"] == log["delivery_id"]
    assert (log["channel"], log["attempts"]) == ("email", 1)
    assert (
        'kefu_notifications_total{channel="email",purpose="shipping_notice",status="sent"} 1.0'
        in (metrics)
    )
    assert "kefu_notification_delivery_seconds_count" in metrics

    [event] = await events(kafka_bootstrap, prefix, expect=1)
    assert (event["type"], event["version"], event["subject"]) == (
        "notification.sent",
        1,
        "ship-O-42",
    )
    assert event["causation_id"] == envelope.id
    assert event["correlation_id"] == envelope.correlation_id
    assert event["data"]["channel"] == "email"
    assert event["data"]["delivery_id"] == log["delivery_id"]


async def test_a_redelivered_request_is_sent_once_even_after_a_restart(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.NOTIFICATION_REQUESTS
    with SmtpServer() as smtp:
        settings = make_settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        envelope = request("ship-once")
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, topic, envelope, times=3)
            # Another envelope (a retried publish upstream) with the same idempotency key.
            await publish(kafka_bootstrap, topic, request("ship-once"))
            await eventually(lambda: has_status(client, "ship-once", "sent"))

        async with run(create_app(settings)) as client:  # a restart, same database
            await publish(kafka_bootstrap, topic, envelope)
            # Same customer = same partition: once this one is sent, the duplicate was seen.
            await publish(kafka_bootstrap, topic, request("ship-next"))
            await eventually(lambda: has_status(client, "ship-next", "sent"))
            log = await status_of(client, "ship-once")

    assert [m["X-Kefu-Delivery-Id"] for m in smtp.messages].count(log["delivery_id"]) == 1
    assert len(smtp.messages) == 2
    sent = await events(kafka_bootstrap, prefix, expect=2)
    assert sorted(e["subject"] for e in sent) == ["ship-next", "ship-once"]


async def test_a_send_cut_by_a_crash_before_its_due_time_was_recorded_is_retried_after_restart(
    make_settings: SettingsFactory,
    run: Run,
    kafka_bootstrap: str,
    prefix: str,
    db: AsyncDatabase[dict[str, Any]],
) -> None:
    with SmtpServer() as smtp:
        settings = make_settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, request("cut"))
            await eventually(lambda: has_status(client, "cut", "sent"))
            log = await status_of(client, "cut")
        # As if the process had died while sending (claimed, lease over) and before the
        # delivery's due time was recorded: the dispatcher's own scan cannot see it.
        lease_over = datetime.now(UTC) - timedelta(seconds=1)
        await db["deliveries"].update_one(
            {"_id": "cut"}, {"$set": {"status": "sending", "next_attempt_at": lease_over}}
        )
        await db["deliveries_due"].delete_many({})
        async with run(create_app(settings)) as client:  # its reconcile pass finds it
            await eventually(lambda: has_status(client, "cut", "sent"))

    assert [m["X-Kefu-Delivery-Id"] for m in smtp.messages] == [log["delivery_id"]] * 2


@pytest.mark.parametrize(("at_once", "entries_while_sending"), [(50, 0), (0, 1)])
async def test_a_notice_attempted_as_soon_as_it_is_accepted_writes_no_due_time(
    make_settings: SettingsFactory,
    run: Run,
    kafka_bootstrap: str,
    prefix: str,
    db: AsyncDatabase[dict[str, Any]],
    at_once: int,
    entries_while_sending: int,
) -> None:
    import threading

    release = threading.Event()
    # The provider holds the call until released: the delivery is claimed and being sent.
    with HttpProvider(verify=lambda _: release.wait(10)) as push:
        settings = make_settings(app_push_url=push.url, attempts_at_once=at_once)
        envelope = request("now-1", preferred_channel="app_push", recipient={"app_push_token": "t"})
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, envelope)
            await eventually(lambda: has_status(client, "now-1", "sending"))
            # Through the dispatcher the claim is due again when its lease ends; attempted at
            # once, no entry is written (a crash here is the reconcile pass's, tested above).
            assert await db["deliveries_due"].count_documents({}) == entries_while_sending
            release.set()
            await eventually(lambda: has_status(client, "now-1", "sent"))
            assert await db["deliveries_due"].count_documents({}) == 0

    assert len(push.requests) == 1


def push_request(key: str, customer_id: str = "c-9") -> Any:
    return request(
        key,
        customer_id=customer_id,
        purpose="inquiry_acknowledgement",
        parameters={"inquiry_id": "I-1"},
        preferred_channel="app_push",
        recipient={"app_push_token": "token-9"},
    )


async def test_a_request_cut_between_its_rate_limit_slot_and_its_record_is_sent_once(
    make_settings: SettingsFactory,
    run: Run,
    kafka_bootstrap: str,
    prefix: str,
    db: AsyncDatabase[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = prefix + topics.NOTIFICATION_REQUESTS
    with HttpProvider() as push:
        app = create_app(make_settings(app_push_url=push.url, rate_limit_per_customer=10))
        # The store is lost after the customer's write (contact card and rate-limit slot) and
        # before the delivery's insert: the consumer retries the request, as a redelivery would.
        deliveries = app.state.deps.deliveries.collection
        insert = deliveries.insert_one
        cut: list[str] = []

        async def insert_cut_once(document: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if not cut:
                cut.append(document["_id"])
                raise AutoReconnect("connection to the store lost")
            return await insert(document, *args, **kwargs)

        monkeypatch.setattr(deliveries, "insert_one", insert_cut_once)
        envelope = push_request("ack-cut")
        async with run(app) as client:
            await publish(kafka_bootstrap, topic, envelope)
            await eventually(lambda: has_status(client, "ack-cut", "sent"))
            # Redelivered once more after its send, then the customer's next notice.
            await publish(kafka_bootstrap, topic, envelope)
            await publish(kafka_bootstrap, topic, push_request("ack-next"))
            await eventually(lambda: has_status(client, "ack-next", "sent"))
            cut_log, next_log = [await status_of(client, k) for k in ("ack-cut", "ack-next")]
        customer = await db["customers"].find_one({"_id": "c-9"})

    assert cut == ["ack-cut"]
    sent_ids = [r.headers["x-kefu-delivery-id"] for r in push.requests]
    assert sent_ids == [cut_log["delivery_id"], next_log["delivery_id"]]
    # The cut notice counts twice in the window (the slot taken before the cut and the one its
    # retry took), never zero times; its redelivery after the send took none.
    assert customer is not None
    assert len(customer["recent_sends"]) == 3


async def test_a_notice_cut_after_it_was_recorded_claimed_is_sent_once_after_a_restart(
    make_settings: SettingsFactory,
    run: Run,
    kafka_bootstrap: str,
    prefix: str,
    db: AsyncDatabase[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = prefix + topics.NOTIFICATION_REQUESTS
    envelope = push_request("ack-claimed")
    with HttpProvider() as push:
        settings = make_settings(app_push_url=push.url, send_lease_seconds=1)
        app = create_app(settings)
        # The process dies right after the delivery's insert (claimed): its send never starts.
        monkeypatch.setattr(app.state.deps.at_once, "start", lambda claimed, route: None)
        async with run(app) as client:
            await publish(kafka_bootstrap, topic, envelope)
            await eventually(lambda: has_status(client, "ack-claimed", "sending"))
            # Held back while it is sent at once, so the crash leaves no due entry.
            assert await db["deliveries_due"].count_documents({}) == 0
        assert push.requests == []

        async with run(create_app(settings)) as client:  # its reconcile pass finds it
            await publish(kafka_bootstrap, topic, envelope)  # and the request is redelivered
            await eventually(lambda: has_status(client, "ack-claimed", "sent"))
            log = await status_of(client, "ack-claimed")

    assert [r.headers["x-kefu-delivery-id"] for r in push.requests] == [log["delivery_id"]]
    assert log["attempts"] == 1


async def test_a_failing_http_provider_is_retried_with_the_same_delivery_id(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    with HttpProvider(fail_first=2) as wechat:
        settings = make_settings(wechat_url=wechat.url, wechat_token="t0ken")
        envelope = request(
            "reply-1",
            purpose="inquiry_reply",
            parameters={"inquiry_id": "INQ-9", "agent_name": "小王", "reply": "已补发"},
            language="zh-CN",
            preferred_channel="wechat",
            recipient={"wechat_openid": "oWx-123"},
        )
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, envelope)
            await eventually(lambda: has_status(client, "reply-1", "sent"))
            log = await status_of(client, "reply-1")
            metrics = (await client.get("/metrics")).text

    assert len(wechat.requests) == 3
    ids = {r.headers["x-kefu-delivery-id"] for r in wechat.requests}
    assert ids == {log["delivery_id"]}
    payload = wechat.requests[-1].json()
    assert (payload["to"], payload["channel"]) == ("oWx-123", "wechat")
    assert "已补发" in payload["body"]
    assert wechat.requests[-1].headers["authorization"] == "Bearer t0ken"
    assert (log["attempts"], log["provider_message_id"]) == (3, "p-3")
    assert (
        'kefu_notification_provider_attempts_total{channel="wechat",outcome="retryable_error"} 2.0'
        in metrics
    )
    [event] = await events(kafka_bootstrap, prefix, expect=1)
    assert (event["type"], event["data"]["attempts"]) == ("notification.sent", 3)


async def test_a_provider_that_keeps_failing_ends_failed_with_the_reason(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    with HttpProvider(fail_first=100) as push:
        settings = make_settings(app_push_url=push.url, delivery_max_attempts=3)
        envelope = request(
            "push-1",
            preferred_channel="app_push",
            recipient={"app_push_token": "tok-1"},
        )
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, envelope)
            await eventually(lambda: has_status(client, "push-1", "failed"))
            log = await status_of(client, "push-1")

    assert len(push.requests) == 3
    assert (log["reason"], log["attempts"]) == ("retries_exhausted", 3)
    assert "503" in log["last_error"]
    [event] = await events(kafka_bootstrap, prefix, expect=1)
    assert event["type"] == "notification.failed"
    assert event["data"]["reason"] == "retries_exhausted"
    assert "503" in event["data"]["detail"]


async def test_an_sms_in_quiet_hours_is_deferred_and_sent_when_they_end(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    clock = FakeClock(datetime(2026, 11, 10, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    morning = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
    with HttpProvider() as sms:
        settings = make_settings(sms_url=sms.url, quiet_hours_channels=["sms"])
        envelope = request(
            "pay-1",
            purpose="payment_reminder",
            parameters={
                "order_id": "O-7",
                "amount": "88.00",
                "currency": "CNY",
                "pay_before": "11-11 12:00",
            },
            language="zh-CN",
            preferred_channel="sms",
            recipient={"phone": "+8613800138000"},
        )
        async with run(create_app(settings, clock=clock)) as client:
            await publish(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, envelope)
            await eventually(lambda: has_status(client, "pay-1", "deferred"))
            log = await status_of(client, "pay-1")
            assert datetime.fromisoformat(log["next_attempt_at"]) == morning
            assert log["reason"] == "quiet_hours"
            clock.now = morning - timedelta(minutes=1)
            await asyncio.sleep(0.5)  # several dispatch polls: still too early
            assert await has_status(client, "pay-1", "deferred")
            assert sms.requests == []
            clock.now = morning + timedelta(seconds=1)
            await eventually(lambda: has_status(client, "pay-1", "sent"))

    [sent_sms] = sms.requests
    assert sent_sms.json()["to"] == "+8613800138000"
    assert "88.00 CNY" in sent_sms.json()["body"]
    deferred, sent = await events(kafka_bootstrap, prefix, expect=2)
    assert deferred["type"] == "notification.deferred"
    assert deferred["data"]["reason"] == "quiet_hours"
    assert datetime.fromisoformat(deferred["data"]["deferred_until"]) == morning
    assert sent["type"] == "notification.sent"


async def test_webhooks_carry_a_signature_the_receiver_can_verify(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    secret = "whsec-test"

    def verify(received: ReceivedRequest) -> bool:
        return verify_signature(
            secret,
            received.headers["x-kefu-timestamp"],
            received.body,
            received.headers["x-kefu-signature"],
            tolerance=60,
        )

    with HttpProvider(verify=verify) as receiver:
        settings = make_settings(webhook_url=receiver.url, webhook_secret=secret)
        envelope = request(
            "survey-1",
            purpose="survey_invitation",
            parameters={"survey_url": "https://shop.example/s/1"},
            preferred_channel="webhook",
            recipient={},
        )
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, prefix + topics.NOTIFICATION_REQUESTS, envelope)
            await eventually(lambda: has_status(client, "survey-1", "sent"))

    [call] = receiver.requests
    assert verify(call)
    assert call.json()["customer_id"] == "c-1"
    assert not verify_signature(
        "wrong", call.headers["x-kefu-timestamp"], call.body, call.headers["x-kefu-signature"]
    )


async def test_bad_requests_go_to_the_dlq_or_end_failed_with_the_reason(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.NOTIFICATION_REQUESTS
    with SmtpServer() as smtp:
        settings = make_settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        malformed = request("bad-1").model_dump(mode="json")
        del malformed["data"]["idempotency_key"]
        unknown_purpose = request("bad-2").model_dump(mode="json")
        unknown_purpose["data"]["purpose"] = "lottery_win"
        await produce(
            kafka_bootstrap,
            topic,
            [b"{not json", json.dumps(malformed).encode(), json.dumps(unknown_purpose).encode()],
            key=b"c-1",
        )
        await publish(kafka_bootstrap, topic, request("bad-template", template="lottery_win"))
        await publish(kafka_bootstrap, topic, request("bad-params", parameters={"order_id": "1"}))
        await publish(
            kafka_bootstrap, topic, request("bad-address", recipient={"phone": "+8613800000000"})
        )
        async with run(create_app(settings)) as client:
            await eventually(lambda: has_status(client, "bad-address", "failed"))
            logs = {k: await status_of(client, k) for k in ("bad-template", "bad-params")}
            address = await status_of(client, "bad-address")
            invalid = await client.get("/deliveries", params={"limit": 1000, "status": "lost"})

    assert smtp.messages == []
    dead = await read_topic(kafka_bootstrap, prefix + "kefu.notifier.dlq", expect=3, settle=0.5)
    assert dead[0].value == b"{not json"
    assert "data.idempotency_key" in dead[1].headers["x-dlq-reason"]
    assert "data.purpose" in dead[2].headers["x-dlq-reason"]
    assert logs["bad-template"]["reason"] == "invalid_template"
    assert "unknown template 'lottery_win'" in logs["bad-template"]["last_error"]
    assert "missing parameter" in logs["bad-params"]["last_error"]
    assert address["reason"] == "no_reachable_channel"
    assert invalid.status_code == 422
    assert {tuple(e["loc"]) for e in invalid.json()["detail"]} == {
        ("query", "limit"),
        ("query", "status"),
    }
    failed = await events(kafka_bootstrap, prefix, expect=3)
    assert sorted((e["type"], e["subject"], e["data"]["reason"]) for e in failed) == [
        ("notification.failed", "bad-address", "no_reachable_channel"),
        ("notification.failed", "bad-params", "invalid_template"),
        ("notification.failed", "bad-template", "invalid_template"),
    ]


async def test_opt_out_and_the_rate_limit_hold_notices_back_without_losing_them(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.NOTIFICATION_REQUESTS
    clock = FakeClock(datetime(2026, 11, 10, 4, 0, tzinfo=UTC))  # noon in Shanghai
    with HttpProvider() as im:
        settings = make_settings(
            marketplace_im_url=im.url, rate_limit_per_customer=2, rate_limit_window_seconds=600
        )

        def im_request(key: str, purpose: str, parameters: dict[str, Any]) -> Any:
            return request(
                key,
                purpose=purpose,
                parameters=parameters,
                preferred_channel="marketplace_im",
                recipient={"marketplace_im_id": "tb-buyer-1"},
            )

        async with run(create_app(settings, clock=clock)) as client:
            bad = await client.put(
                "/customers/c-1/preferences", json={"opted_out_purposes": ["lottery"]}
            )
            assert bad.status_code == 422
            assert bad.json()["detail"][0]["loc"][:2] == ["body", "opted_out_purposes"]
            put = await client.put(
                "/customers/c-1/preferences", json={"opted_out_purposes": ["survey_invitation"]}
            )
            assert put.json()["always_delivered"] == [
                "order_change_confirmation",
                "verification_code",
            ]
            survey = im_request("s-1", "survey_invitation", {"survey_url": "https://x/1"})
            await publish(kafka_bootstrap, topic, survey)
            await eventually(lambda: has_status(client, "s-1", "suppressed"))
            for n, expected in ((1, "sent"), (2, "sent"), (3, "deferred")):
                key = f"ack-{n}"
                ack = im_request(key, "inquiry_acknowledgement", {"inquiry_id": f"I-{n}"})
                await publish(kafka_bootstrap, topic, ack)
                await eventually(partial(has_status, client, key, expected))
            code = im_request("code-1", "verification_code", {"code": "123456", "valid_minutes": 5})
            await publish(kafka_bootstrap, topic, code)
            await eventually(lambda: has_status(client, "code-1", "sent"))
            assert await has_status(client, "ack-3", "deferred")
            clock.now += timedelta(seconds=601)
            await eventually(lambda: has_status(client, "ack-3", "sent"))
            listing = await client.get("/deliveries", params={"customer_id": "c-1", "limit": 10})
            only_sent = await client.get(
                "/deliveries", params={"customer_id": "c-1", "status": "sent", "limit": 2}
            )

    assert [r.json()["purpose"] for r in im.requests].count("survey_invitation") == 0
    assert len(im.requests) == 4
    assert {i["idempotency_key"] for i in listing.json()["items"]} == {
        "s-1",
        "ack-1",
        "ack-2",
        "ack-3",
        "code-1",
    }
    assert [i["status"] for i in only_sent.json()["items"]] == ["sent", "sent"]
    kinds = [(e["type"], e["subject"]) for e in await events(kafka_bootstrap, prefix, expect=6)]
    # Ordered per delivery (the key), not across deliveries.
    assert sorted(kinds) == sorted(
        [
            ("notification.suppressed", "s-1"),
            ("notification.sent", "ack-1"),
            ("notification.sent", "ack-2"),
            ("notification.deferred", "ack-3"),
            ("notification.sent", "code-1"),
            ("notification.sent", "ack-3"),
        ]
    )
    assert [k for k in kinds if k[1] == "ack-3"] == [
        ("notification.deferred", "ack-3"),
        ("notification.sent", "ack-3"),
    ]


async def test_a_request_without_addresses_reaches_the_customer_at_the_last_known_contact(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.NOTIFICATION_REQUESTS
    with SmtpServer() as smtp:
        settings = make_settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none")
        async with run(create_app(settings)) as client:
            await publish(kafka_bootstrap, topic, request("first", customer_id="c-77"))
            await eventually(lambda: has_status(client, "first", "sent"))
            # A survey asked for from events that carry no personal data: no recipient.
            survey = request(
                "survey-1",
                customer_id="c-77",
                purpose="survey_invitation",
                template="survey_invitation",
                parameters={"survey_url": "https://shop.example/s/1"},
                recipient={},
            )
            await publish(kafka_bootstrap, topic, survey)
            await eventually(lambda: has_status(client, "survey-1", "sent"))
            unknown = request("nobody", customer_id="c-never-seen", recipient={})
            await publish(kafka_bootstrap, topic, unknown)
            await eventually(lambda: has_status(client, "nobody", "failed"))

    assert [m["To"] for m in smtp.messages] == ["li.lei@example.cn", "li.lei@example.cn"]
    assert "https://shop.example/s/1" in smtp.messages[1].get_content()
