"""Webhook use cases with in-memory stores: fan-out, retries, pause, auto-disable, refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kefu_notifier.adapters.metrics import WebhookMetrics
from kefu_notifier.adapters.webhook_store import subscription_from_state
from kefu_notifier.domain.policies import Backoff
from kefu_notifier.domain.webhook_ports import WebhookAttemptFailed, WebhookRequest
from kefu_notifier.domain.webhook_subscription import (
    RECORDING_STATUSES,
    DisablePolicy,
    Subscription,
    SubscriptionStatus,
)
from kefu_notifier.domain.webhook_targets import Target, TargetRefused, parse_target
from kefu_notifier.webhook_handlers import (
    SubscriptionNotFound,
    WebhookDeps,
    attempt_webhook_delivery,
    create_subscription,
    delete_subscription,
    dispatch_due_webhooks,
    fan_out,
    get_subscription,
    pause_subscription,
    resume_subscription,
)
from kefu_shared.documents import Change, Outcome, Stored
from notifier_testkit import FakeClock, event
from prometheus_client import CollectorRegistry

T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)


class MemoryStore:
    """What the use cases rely on from VersionedDocumentStore: load, and mutate once per id."""

    def __init__(self) -> None:
        self.docs: dict[str, Stored] = {}
        self.outbox: list[Any] = []
        self._lock = asyncio.Lock()

    async def load(self, doc_id: str) -> Stored | None:
        return self.docs.get(doc_id)

    async def mutate(self, doc_id: str, decide: Any, *, message_id: str | None = None) -> Outcome:
        async with self._lock:
            current = self.docs.get(doc_id)
            if current is not None and message_id is not None and message_id in current.applied:
                return Outcome(stored=current, duplicate=True)
            result = decide(current)
            change: Change | None = await result if isinstance(result, Awaitable) else result
            if change is None:
                return Outcome(stored=current)
            applied = (*(current.applied if current else ()), *([message_id] if message_id else []))
            version = (current.version if current else 0) + 1
            stored = Stored(doc_id, dict(change.state), version, applied)
            self.docs[doc_id] = stored
            self.outbox.extend(change.events)
            return Outcome(stored=stored, changed=True, events=list(change.events))


class MemoryLog:
    def __init__(self, deliveries: MemoryStore) -> None:
        self._deliveries = deliveries

    async def due_delivery_ids(self, now: datetime, ids: list[str], limit: int) -> list[str]:
        due = [
            (s.state["next_attempt_at"], s.id)
            for s in self._deliveries.docs.values()
            if s.state["status"] in ("pending", "sending")
            and s.state["next_attempt_at"] <= now
            and s.state["subscription_id"] in ids
        ]
        return [doc_id for _, doc_id in sorted(due)][:limit]

    async def forget_deliveries(self, subscription_id: str) -> int:
        gone = [
            k
            for k, s in self._deliveries.docs.items()
            if s.state["subscription_id"] == subscription_id
        ]
        for k in gone:
            del self._deliveries.docs[k]
        return len(gone)


class MemoryDirectory:
    """No cache: always what the store holds (the real one's cache is tested on real servers)."""

    def __init__(self, subscriptions: MemoryStore) -> None:
        self._subscriptions = subscriptions

    def invalidate(self) -> None:
        pass

    async def recording(self) -> list[Subscription]:
        found = [subscription_from_state(s.id, s.state) for s in self._subscriptions.docs.values()]
        return [s for s in found if s.status in RECORDING_STATUSES]

    async def active_ids(self) -> list[str]:
        return [
            s.subscription_id
            for s in await self.recording()
            if s.status is SubscriptionStatus.ACTIVE
        ]


class ScriptedPoster:
    """Answers each POST with the next scripted status (then 200); records every request."""

    def __init__(self, *statuses: int) -> None:
        self.script = list(statuses)
        self.requests: list[WebhookRequest] = []

    async def post(self, request: WebhookRequest) -> int:
        self.requests.append(request)
        status = self.script.pop(0) if self.script else 200
        if status >= 300:
            raise WebhookAttemptFailed(f"HTTP {status}", status_code=status)
        return status


class ListGuard:
    """Refuses the hosts in ``refused``; ``enforcing`` like the real guard without the setting."""

    def __init__(self, *refused: str) -> None:
        self.refused = set(refused)

    @property
    def enforcing(self) -> bool:
        return True

    async def check(self, url: str) -> Target:
        target = parse_target(url)
        if target.host in self.refused:
            raise TargetRefused(f"host {target.host!r} resolves to 10.0.0.1 is a private address")
        return target


def make_deps(
    poster: ScriptedPoster, clock: FakeClock, *, guard: ListGuard | None = None, **policy: Any
) -> WebhookDeps:
    subscriptions, deliveries = MemoryStore(), MemoryStore()
    return WebhookDeps(
        subscriptions=subscriptions,  # type: ignore[arg-type]
        deliveries=deliveries,  # type: ignore[arg-type]
        webhook_log=MemoryLog(deliveries),  # type: ignore[arg-type]
        directory=MemoryDirectory(subscriptions),  # type: ignore[arg-type]
        poster=poster,
        guard=guard or ListGuard(),
        backoff=Backoff(initial=timedelta(seconds=10), cap=timedelta(minutes=5), max_attempts=5),
        disable_policy=DisablePolicy(
            after_failures=policy.get("after_failures", 3),
            after=policy.get("after", timedelta(minutes=1)),
        ),
        send_lease=timedelta(seconds=30),
        history_grace=timedelta(minutes=5),
        events_topic="kefu.notifier.events",
        metrics=WebhookMetrics(CollectorRegistry()),
        clock=clock,
    )


async def subscribe(deps: WebhookDeps, *patterns: str, url: str = "https://crm.example/k") -> str:
    subscription, _ = await create_subscription(
        target_url=url,
        event_types=patterns,
        secret="whsec_unit_test_secret",
        description="",
        created_by="crm",
        deps=deps,
    )
    return subscription.subscription_id


def stored_deliveries(deps: WebhookDeps) -> dict[str, dict[str, Any]]:
    store: MemoryStore = deps.deliveries  # type: ignore[assignment]
    return {s.state["event_id"]: s.state for s in store.docs.values()}


def disabled_events(deps: WebhookDeps) -> list[dict[str, Any]]:
    store: MemoryStore = deps.subscriptions  # type: ignore[assignment]
    return [json.loads(m.body) for m in store.outbox]


async def test_an_event_becomes_one_delivery_per_matching_subscription_once() -> None:
    clock = FakeClock(T0)
    deps = make_deps(ScriptedPoster(), clock)
    crm = await subscribe(deps, "inquiry.*")
    erp = await subscribe(deps, "order.paid", "inquiry.received")
    await subscribe(deps, "aftersales.*")
    received = event("inquiry.received")
    received = received.model_copy(update={"time": T0})

    assert await fan_out(received, deps) == 2
    assert await fan_out(received, deps) == 0  # redelivered: nothing new
    store: MemoryStore = deps.deliveries  # type: ignore[assignment]
    recorded = sorted(s.state["subscription_id"] for s in store.docs.values())
    assert recorded == sorted([crm, erp])
    assert all(s.state["body"] == received.model_dump_json() for s in store.docs.values())


async def test_events_from_before_the_subscription_are_not_its_history() -> None:
    clock = FakeClock(T0)
    deps = make_deps(ScriptedPoster(), clock)
    await subscribe(deps, "*")
    old = event("inquiry.received").model_copy(update={"time": T0 - timedelta(hours=2)})
    skewed = event("inquiry.received").model_copy(update={"time": T0 - timedelta(minutes=1)})
    assert await fan_out(old, deps) == 0
    assert await fan_out(skewed, deps) == 1


async def test_a_failing_delivery_is_retried_later_with_the_same_id_and_body() -> None:
    clock = FakeClock(T0)
    poster = ScriptedPoster(503, 500)
    deps = make_deps(poster, clock, after_failures=10)
    sub_id = await subscribe(deps, "inquiry.*")
    await fan_out(event("inquiry.received").model_copy(update={"time": T0}), deps)

    assert await dispatch_due_webhooks(deps, limit=10) == 1
    assert await dispatch_due_webhooks(deps, limit=10) == 0  # backing off for 10 s
    clock.now += timedelta(seconds=10)
    await dispatch_due_webhooks(deps, limit=10)
    clock.now += timedelta(seconds=19)
    assert await dispatch_due_webhooks(deps, limit=10) == 0  # second wait is 20 s
    clock.now += timedelta(seconds=1)
    await dispatch_due_webhooks(deps, limit=10)

    [delivery] = stored_deliveries(deps).values()
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 3)
    assert [r.attempt for r in poster.requests] == [1, 2, 3]
    assert len({(r.delivery_id, r.body) for r in poster.requests}) == 1
    subscription = await get_subscription(sub_id, deps)
    assert (subscription.consecutive_failures, subscription.last_success_at) == (0, clock.now)


async def test_a_paused_subscription_keeps_recording_and_sends_on_resume() -> None:
    clock = FakeClock(T0)
    poster = ScriptedPoster()
    deps = make_deps(poster, clock)
    sub_id = await subscribe(deps, "order.*")
    await pause_subscription(sub_id, deps)
    assert await fan_out(event("order.paid").model_copy(update={"time": T0}), deps) == 1
    assert await dispatch_due_webhooks(deps, limit=10) == 0
    await resume_subscription(sub_id, deps)
    assert await dispatch_due_webhooks(deps, limit=10) == 1
    assert len(poster.requests) == 1


async def test_a_subscription_failing_long_enough_is_disabled_once_with_its_event() -> None:
    clock = FakeClock(T0)
    deps = make_deps(ScriptedPoster(*[503] * 20), clock, after_failures=3)
    sub_id = await subscribe(deps, "*")
    for n in range(4):  # four events, attempted 20 s apart
        await fan_out(event("order.paid", subject=f"O-{n}").model_copy(update={"time": T0}), deps)
    for _ in range(6):
        await dispatch_due_webhooks(deps, limit=1)
        clock.now += timedelta(seconds=20)

    subscription = await get_subscription(sub_id, deps)
    assert subscription.status is SubscriptionStatus.DISABLED
    # Three failures within 40 s were not enough: it needed the fourth, a minute after the first.
    assert subscription.consecutive_failures == 4
    [notice] = disabled_events(deps)
    assert notice["type"] == "webhook.subscription_disabled"
    assert notice["data"]["consecutive_failures"] == 4
    assert notice["data"]["target_host"] == "crm.example"
    assert await fan_out(event("order.paid").model_copy(update={"time": clock.now}), deps) == 0


async def test_a_target_that_turns_private_fails_its_attempts_without_a_post() -> None:
    clock = FakeClock(T0)
    poster = ScriptedPoster()
    guard = ListGuard()
    deps = make_deps(poster, clock, guard=guard)
    sub_id = await subscribe(deps, "*", url="https://rebind.example/hook")
    await fan_out(event("order.paid").model_copy(update={"time": T0}), deps)
    guard.refused.add("rebind.example")  # DNS now answers with an internal address
    await dispatch_due_webhooks(deps, limit=10)

    assert poster.requests == []
    [delivery] = stored_deliveries(deps).values()
    assert (delivery["status"], delivery["attempts"]) == ("pending", 1)
    assert "private address" in delivery["last_error"]
    assert (await get_subscription(sub_id, deps)).consecutive_failures == 1


async def test_creating_deleting_and_unknown_subscriptions() -> None:
    clock = FakeClock(T0)
    deps = make_deps(ScriptedPoster(), clock, guard=ListGuard("intranet.example"))
    with pytest.raises(TargetRefused, match="private address"):
        await subscribe(deps, "*", url="https://intranet.example/hook")
    sub_id = await subscribe(deps, "*")
    await fan_out(event("order.paid").model_copy(update={"time": T0}), deps)
    await delete_subscription(sub_id, deps)
    assert stored_deliveries(deps) == {}
    for call in (get_subscription, pause_subscription, resume_subscription, delete_subscription):
        with pytest.raises(SubscriptionNotFound):
            await call(sub_id, deps)
    assert await attempt_webhook_delivery("whd_unknown", deps) is None
