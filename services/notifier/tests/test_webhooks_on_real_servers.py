"""Webhook subscriptions end to end: real Kafka, FerretDB and a real receiving HTTP server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from kefu_local.pytest_plugin import auth_header, running
from kefu_notifier.adapters.webhook_store import SubscriptionDirectory, subscription_to_state
from kefu_notifier.bootstrap import create_app
from kefu_notifier.domain.webhook_subscription import Subscription
from kefu_notifier.settings import NotifierSettings
from kefu_shared import topics
from kefu_shared.auth import Role
from kefu_shared.crypto import new_key
from kefu_shared.envelope import Envelope
from kefu_shared.retention import PURGED
from kefu_shared.testing import eventually, produce, read_topic
from notifier_testkit import FakeClock, WebhookReceiver, event, publish
from pymongo import AsyncMongoClient

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789-abcd"
SettingsFactory = Callable[..., NotifierSettings]
Run = Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_settings(service_overrides: dict[str, Any], unique: str) -> SettingsFactory:
    def make(**extra: Any) -> NotifierSettings:
        values: dict[str, Any] = {
            **service_overrides,
            "log_unconfigured_channels": False,
            "webhook_allow_private_targets": True,  # the receiver listens on 127.0.0.1
            "webhook_consumer_group": f"webhooks-{unique}",
            "webhook_dispatch_poll_seconds": 0.1,
            "webhook_initial_backoff_seconds": 0.1,
            "webhook_max_backoff_seconds": 0.4,
            "webhook_timeout_seconds": 3,
            **extra,
        }
        return NotifierSettings(**values)

    return make


@pytest.fixture
def run(mongo_client: AsyncMongoClient[dict[str, Any]], service_overrides: dict[str, Any]) -> Run:
    """``running(app)``, and before stopping it, wait until the outbox relay published all."""
    db = mongo_client[service_overrides["mongodb_database"]]

    async def drained() -> bool:
        return await db["webhook_subscriptions"].count_documents({"outbox_pending": True}) == 0

    @asynccontextmanager
    async def run_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
        async with running(app) as client:
            yield client
            await eventually(drained)

    return run_app


@pytest.fixture
def prefix(service_overrides: dict[str, Any]) -> str:
    return str(service_overrides["topic_prefix"])


async def subscribe(
    client: httpx.AsyncClient, url: str, event_types: list[str], **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/webhooks",
        json={"target_url": url, "event_types": event_types, "secret": SECRET, **extra},
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def deliveries(client: httpx.AsyncClient, subscription_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/webhooks/{subscription_id}/deliveries", params={"limit": 100})
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def statuses(client: httpx.AsyncClient, subscription_id: str) -> dict[str, str]:
    """Event id -> delivery status, from the delivery log."""
    return {d["event_id"]: d["status"] for d in await deliveries(client, subscription_id)}


async def subscription(client: httpx.AsyncClient, subscription_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await client.get(f"/webhooks/{subscription_id}")).json()
    return found


async def send(kafka_bootstrap: str, topic: str, envelope: Envelope[Any], times: int = 1) -> None:
    await publish(kafka_bootstrap, topic, envelope, times=times)


async def test_a_receiver_verifies_signed_events_and_sees_retries_with_one_delivery_id(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    received = event("inquiry.received", subject="INQ-7")
    paid = event("order.paid", source="orders", subject="O-42", data={"amount": "199.00"})
    shipped = event("order.shipped", source="orders", subject="O-42")
    with WebhookReceiver(secret=SECRET, fail_first=2) as receiver:
        async with run(create_app(make_settings())) as client:
            created = await subscribe(client, receiver.url, ["inquiry.*", "order.paid"])
            sub_id = created["id"]
            await send(kafka_bootstrap, prefix + topics.INQUIRY_EVENTS, received)
            await send(kafka_bootstrap, prefix + topics.ORDERS_EVENTS, shipped)
            await send(kafka_bootstrap, prefix + topics.ORDERS_EVENTS, paid)

            async def both_delivered() -> bool:
                return await statuses(client, sub_id) == {
                    received.id: "delivered",
                    paid.id: "delivered",
                }

            await eventually(both_delivered)
            log = {d["event_id"]: d for d in await deliveries(client, sub_id)}
            shown = await subscription(client, sub_id)
            listed = (await client.get("/webhooks")).json()["items"]
            metrics = (await client.get("/metrics")).text

    assert created["secret"] == SECRET
    assert created["secret_hint"] == "…abcd"
    for view in (shown, *listed):
        assert "secret" not in view
        assert view["secret_hint"] == "…abcd"
    assert [s["id"] for s in listed] == [sub_id]
    assert (shown["status"], shown["consecutive_failures"]) == ("active", 0)

    # Three attempts per event (two 503s, then 200), every one signed, one delivery id each.
    assert all(receiver.verified(r) for r in receiver.requests)
    assert sorted(receiver.event_ids()) == sorted([received.id] * 3 + [paid.id] * 3)
    for envelope in (received, paid):
        delivery_id = log[envelope.id]["delivery_id"]
        attempts = receiver.attempts_of(delivery_id)
        assert [r.headers["x-kefu-attempt"] for r in attempts] == ["1", "2", "3"]
        assert {r.headers["x-kefu-event-id"] for r in attempts} == {envelope.id}
        assert {r.body for r in attempts} == {attempts[0].body}  # the same bytes each time
        body = attempts[-1].json()
        assert (body["id"], body["type"], body["subject"]) == (
            envelope.id,
            envelope.type,
            envelope.subject,
        )
        assert body["data"] == envelope.data
        assert (log[envelope.id]["attempts"], log[envelope.id]["last_status_code"]) == (3, 200)
    assert (
        receiver.attempts_of(log[paid.id]["delivery_id"])[0].headers["x-kefu-subscription-id"]
        == sub_id
    )
    assert shipped.id not in receiver.event_ids()
    assert 'kefu_webhook_attempts_total{outcome="failed"} 4.0' in metrics
    assert 'kefu_webhook_attempts_total{outcome="ok"} 2.0' in metrics
    assert 'kefu_webhook_deliveries_recorded_total{source="orders"} 1.0' in metrics


async def test_pausing_holds_deliveries_and_resuming_sends_what_matched_meanwhile(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.INQUIRY_EVENTS
    before, during_1, during_2, after_delete = (
        event("inquiry.resolved", subject=f"INQ-{n}") for n in range(4)
    )
    with WebhookReceiver(secret=SECRET) as receiver:
        async with run(create_app(make_settings())) as client:
            sub_id = (await subscribe(client, receiver.url, ["inquiry.resolved"]))["id"]
            await send(kafka_bootstrap, topic, before)
            await eventually(lambda: _has(receiver, before.id))

            paused = await client.post(f"/webhooks/{sub_id}/pause")
            assert paused.json()["status"] == "paused"
            await send(kafka_bootstrap, topic, during_1)
            await send(kafka_bootstrap, topic, during_2)

            async def recorded_while_paused() -> bool:
                found = await statuses(client, sub_id)
                return found.get(during_1.id) == found.get(during_2.id) == "pending"

            await eventually(recorded_while_paused)
            await asyncio.sleep(0.6)  # several dispatch polls: still nothing sent
            assert receiver.event_ids() == [before.id]

            resumed = await client.post(f"/webhooks/{sub_id}/resume")
            assert resumed.json()["status"] == "active"
            await eventually(lambda: _has(receiver, during_1.id, during_2.id))

            deleted = await client.delete(f"/webhooks/{sub_id}")
            await send(kafka_bootstrap, topic, after_delete)
            # Same key, same partition: once this later event reached the other subscription,
            # the deleted one has had its chance to (wrongly) get the earlier one.
            witness = await subscribe(client, receiver.url, ["inquiry.reopened"])
            await send(kafka_bootstrap, topic, event("inquiry.reopened", subject="INQ-3"))
            await eventually(lambda: _has_type(receiver, "inquiry.reopened"))
            gone = await client.get(f"/webhooks/{sub_id}")
            gone_log = await client.get(f"/webhooks/{sub_id}/deliveries")
            listed = (await client.get("/webhooks")).json()["items"]

    assert sorted(receiver.event_ids()[:3]) == sorted([before.id, during_1.id, during_2.id])
    assert after_delete.id not in receiver.event_ids()
    assert deleted.status_code == 204
    assert (gone.status_code, gone_log.status_code) == (404, 404)
    assert [s["id"] for s in listed] == [witness["id"]]


async def test_a_subscription_that_always_fails_is_disabled_with_the_reason(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.AFTERSALES_EVENTS
    first = event("aftersales.case_opened", source="aftersales", subject="AS-1")
    while_disabled = event("aftersales.case_closed", source="aftersales", subject="AS-1")
    settings = make_settings(
        webhook_disable_after_failures=3,
        webhook_disable_after_seconds=0,
        webhook_delivery_max_attempts=10,
    )
    with (
        WebhookReceiver(secret=SECRET, failing=True) as broken,
        WebhookReceiver(secret=SECRET) as monitor,
    ):
        async with run(create_app(settings)) as client:
            watcher = await subscribe(client, monitor.url, ["webhook.*"])
            sub_id = (await subscribe(client, broken.url, ["aftersales.*"]))["id"]
            await send(kafka_bootstrap, topic, first)

            async def disabled() -> bool:
                return (await subscription(client, sub_id))["status"] == "disabled"

            await eventually(disabled)
            shown = await subscription(client, sub_id)
            await send(kafka_bootstrap, topic, while_disabled)
            # The notifier's own event reaches the other subscription as a webhook, too.
            await eventually(lambda: _has_type(monitor, "webhook.subscription_disabled"))
            await asyncio.sleep(0.6)  # several dispatch polls: no more attempts
            attempts_while_disabled = len(broken.requests)
            log_while_disabled = await statuses(client, sub_id)
            refused_pause = await client.post(f"/webhooks/{sub_id}/pause")

            broken.failing = False  # the owner fixed the endpoint
            resumed = (await client.post(f"/webhooks/{sub_id}/resume")).json()
            await eventually(lambda: _has_status(client, sub_id, first.id, "delivered"))
            log_after = await statuses(client, sub_id)

    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "consecutive_failures")
    assert shown["consecutive_failures"] == 3
    assert shown["last_error"].startswith("HTTP 503")
    assert shown["disabled_at"] is not None
    assert attempts_while_disabled == 3
    assert log_while_disabled == {first.id: "pending"}  # kept; the later event not recorded
    assert refused_pause.status_code == 409
    assert "resume it first" in refused_pause.json()["detail"]
    assert (resumed["status"], resumed["consecutive_failures"]) == ("active", 0)
    assert log_after == {first.id: "delivered"}

    [notice] = monitor.requests
    assert monitor.verified(notice)
    assert (notice.json()["type"], notice.json()["subject"]) == (
        "webhook.subscription_disabled",
        sub_id,
    )
    assert watcher["status"] == "active"
    published = await read_topic(
        kafka_bootstrap, prefix + topics.NOTIFIER_EVENTS, expect=1, settle=0.5
    )
    [event_on_kafka] = [r.json() for r in published]
    assert (event_on_kafka["type"], event_on_kafka["subject"]) == (
        "webhook.subscription_disabled",
        sub_id,
    )
    data = event_on_kafka["data"]
    assert (data["reason"], data["consecutive_failures"], data["target_host"]) == (
        "consecutive_failures",
        3,
        "127.0.0.1",
    )
    assert data["detail"].startswith("HTTP 503")
    assert data["last_delivery_id"] == broken.requests[-1].headers["x-kefu-delivery-id"]
    assert event_on_kafka["causation_id"] == first.id


async def test_a_redelivered_event_is_not_posted_again_after_a_success(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.FEEDBACK_EVENTS
    answered = event("survey.answered", source="feedback", subject="SV-1")
    settings = make_settings()
    with WebhookReceiver(secret=SECRET) as receiver:
        async with run(create_app(settings)) as client:
            sub_id = (await subscribe(client, receiver.url, ["survey.*"]))["id"]
            await send(kafka_bootstrap, topic, answered)
            await eventually(lambda: _has_status(client, sub_id, answered.id, "delivered"))
            await send(kafka_bootstrap, topic, answered, times=2)

        async with run(create_app(settings)) as client:  # a restart, same database
            await send(kafka_bootstrap, topic, answered)
            # Same key, same partition: once this one is delivered, the duplicates were seen.
            later = event("survey.sent", source="feedback", subject="SV-1")
            await send(kafka_bootstrap, topic, later)
            await eventually(lambda: _has_status(client, sub_id, later.id, "delivered"))
            log = await deliveries(client, sub_id)

    assert receiver.event_ids() == [answered.id, later.id]
    assert sorted(d["event_id"] for d in log) == sorted([answered.id, later.id])


async def test_private_targets_and_bad_subscriptions_are_refused_naming_the_field(
    make_settings: SettingsFactory, run: Run
) -> None:
    settings = make_settings(webhook_allow_private_targets=False)
    refused_targets = {
        "http://127.0.0.1:8080/hook": "loopback",
        "http://localhost/hook": "loopback",
        "http://[::1]/hook": "loopback",
        "http://10.0.0.5/hook": "private",
        "http://192.168.1.20/hook": "private",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "ftp://93.184.215.14/hook": "scheme 'ftp' is not allowed",
        "http://user:pw@93.184.215.14/hook": "credentials",
    }
    async with run(create_app(settings)) as client:
        answers = {
            url: await client.post(
                "/webhooks", json={"target_url": url, "event_types": ["inquiry.*"]}
            )
            for url in refused_targets
        }
        bad_bodies = {
            "event_types": {"target_url": "https://93.184.215.14/", "event_types": []},
            "event_types.0": {"target_url": "https://93.184.215.14/", "event_types": ["Bad Type"]},
            "secret": {
                "target_url": "https://93.184.215.14/",
                "event_types": ["*"],
                "secret": "short",
            },
            "colour": {"target_url": "https://93.184.215.14/", "event_types": ["*"], "colour": 1},
        }
        bad = {
            field: await client.post("/webhooks", json=body) for field, body in bad_bodies.items()
        }
        public = await client.post(
            "/webhooks", json={"target_url": "https://93.184.215.14/kefu", "event_types": ["*"]}
        )
        unknown = await client.get("/webhooks/wh_0123abcd")
        malformed_id = await client.get("/webhooks/not-an-id")
        too_many = await client.get(f"/webhooks/{public.json()['id']}/deliveries?limit=1000")
        valid = {"target_url": "https://93.184.215.14/kefu", "event_types": ["*"]}
        as_agent = await client.post("/webhooks", json=valid, headers=auth_header(Role.AGENT))
        agent_reads = await client.get("/webhooks", headers=auth_header(Role.AGENT))
        anonymous = await client.post(
            "/webhooks", json=valid, headers={"Authorization": "Bearer nope"}
        )
        listed = (await client.get("/webhooks")).json()["items"]

    for url, reason in refused_targets.items():
        answer = answers[url]
        assert answer.status_code == 422, url
        [error] = answer.json()["detail"]
        assert error["loc"] == ["body", "target_url"]
        assert reason in error["msg"], (url, error["msg"])
    for field, answer in bad.items():
        assert answer.status_code == 422
        assert ".".join(str(p) for p in answer.json()["detail"][0]["loc"][1:]) == field
    # A public address is fine; a generated secret is shown once.
    assert public.status_code == 201
    assert public.json()["secret"].startswith("whsec_")
    assert [s["id"] for s in listed] == [public.json()["id"]]
    assert "secret" not in listed[0]
    assert (unknown.status_code, malformed_id.status_code) == (404, 422)
    assert too_many.status_code == 422
    assert (as_agent.status_code, agent_reads.status_code, anonymous.status_code) == (403, 403, 401)
    assert public.json()["created_by"] == "test-admin"


async def test_events_that_are_not_kefu_envelopes_go_to_the_dlq_and_the_rest_flows(
    make_settings: SettingsFactory, run: Run, kafka_bootstrap: str, prefix: str
) -> None:
    topic = prefix + topics.NOTIFIER_EVENTS
    good = event("notification.sent", source="notifier", subject="ship-1")
    not_an_envelope = json.dumps({"type": "notification.sent", "data": {}}).encode()
    with WebhookReceiver(secret=SECRET) as receiver:
        async with run(create_app(make_settings())) as client:
            sub_id = (await subscribe(client, receiver.url, ["notification.*"]))["id"]
            await produce(kafka_bootstrap, topic, [b"{not json", not_an_envelope], key=b"ship-1")
            await send(kafka_bootstrap, topic, good)
            await eventually(lambda: _has_status(client, sub_id, good.id, "delivered"))

    assert receiver.event_ids() == [good.id]
    dead = await read_topic(kafka_bootstrap, prefix + "kefu.notifier.dlq", expect=2, settle=0.5)
    assert [d.value for d in dead] == [b"{not json", not_an_envelope]
    assert "invalid message" in dead[1].headers["x-dlq-reason"]
    assert "id: Field required" in dead[1].headers["x-dlq-reason"]


async def test_a_subscription_made_while_the_list_was_being_read_is_not_cached_away(
    mongo_client: AsyncMongoClient[dict[str, Any]], service_overrides: dict[str, Any], unique: str
) -> None:
    # The dispatcher's poll may be reading the list when the API creates a subscription; that
    # stale read must not be cached past the API's invalidate(), or the fan-out would skip the
    # new subscription's first events for a whole cache period (long here, to make it visible).
    collection = mongo_client[service_overrides["mongodb_database"]][f"subs-{unique}"]
    first_read_done, go_on = asyncio.Event(), asyncio.Event()

    class ReadThenWait:
        """find() reads at once (before the insert), then holds its answer until ``go_on``."""

        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor

        async def to_list(self) -> list[dict[str, Any]]:
            docs: list[dict[str, Any]] = await self._cursor.to_list()
            if not first_read_done.is_set():
                first_read_done.set()
                await go_on.wait()
            return docs

    class SlowReads:
        def find(self, *args: Any) -> ReadThenWait:
            return ReadThenWait(collection.find(*args))

    directory = SubscriptionDirectory(SlowReads(), ttl=600)  # type: ignore[arg-type]
    reading = asyncio.create_task(directory.recording())
    await first_read_done.wait()
    created = Subscription.create(
        subscription_id="wh_race",
        target_url="https://93.184.215.14/kefu",
        event_types=("*",),
        secret=SECRET,
        description="",
        created_by="test-admin",
        now=datetime.now(UTC),
    )
    await collection.insert_one({"_id": "wh_race", **subscription_to_state(created)})
    directory.invalidate()
    go_on.set()

    assert [s.subscription_id for s in await reading] == ["wh_race"]
    assert await directory.active_ids() == ["wh_race"]


async def _has(receiver: WebhookReceiver, *event_ids: str) -> bool:
    return set(event_ids) <= set(receiver.event_ids())


async def _has_type(receiver: WebhookReceiver, event_type: str) -> bool:
    return any(r.headers.get("x-kefu-event-type") == event_type for r in receiver.requests)


async def _has_status(
    client: httpx.AsyncClient, subscription_id: str, event_id: str, status: str
) -> bool:
    return (await statuses(client, subscription_id)).get(event_id) == status


async def test_webhook_bodies_are_sealed_at_rest_and_purged_after_the_retention_period(
    make_settings: SettingsFactory,
    run: Run,
    kafka_bootstrap: str,
    prefix: str,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    service_overrides: dict[str, Any],
) -> None:
    """An event posted to a shop may quote a customer's message: the delivery keeps it sealed,
    and once the delivery is finished and the retention period over, not at all."""
    db = mongo_client[service_overrides["mongodb_database"]]
    topic = prefix + topics.INQUIRY_EVENTS
    quoted = "我的手机号 13800138000, 地址 上海市长宁区"
    clock = FakeClock(datetime(2026, 11, 23, 4, 0, tzinfo=UTC))
    settings = make_settings(
        data_keys={"k1": new_key()}, retention_days=7, retention_scan_seconds=0.2
    )
    with WebhookReceiver(secret=SECRET) as receiver:
        async with run(create_app(settings, clock=clock)) as client:
            sub_id = (await subscribe(client, receiver.url, ["inquiry.*"]))["id"]
            received = event("inquiry.received", data={"text": quoted})
            await send(kafka_bootstrap, topic, received)
            await eventually(lambda: _has_status(client, sub_id, received.id, "delivered"))
            stored = await db["webhook_deliveries"].find_one({"event_id": received.id})
            assert stored is not None
            assert "13800138000" not in json.dumps(stored, default=str, ensure_ascii=False)

            clock.now += timedelta(days=6)  # inside the period: still kept (sealed)
            await asyncio.sleep(1.0)
            assert (await db["webhook_deliveries"].find_one({"_id": stored["_id"]}))[
                "body"
            ] != PURGED
            clock.now += timedelta(days=2)

            async def purged() -> bool:
                doc = await db["webhook_deliveries"].find_one({"_id": stored["_id"]})
                return doc is not None and doc["body"] == PURGED

            await eventually(purged, timeout=30)
            # The record stays in the log, with its outcome.
            assert (await statuses(client, sub_id))[received.id] == "delivered"
    # The receiver got the content itself.
    assert receiver.requests[0].json()["data"]["text"] == quoted
