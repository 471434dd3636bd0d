"""The composition root: settings in, a runnable FastAPI app (broker, stores, loop, API) out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from kefu_shared import topics
from kefu_shared.documents import VersionedDocumentStore
from kefu_shared.http import create_http_app
from kefu_shared.retention import RetentionJob, RetentionRule
from kefu_shared.runtime import ServiceRuntime, build_runtime

from kefu_notifier.adapters import encryption
from kefu_notifier.adapters.http_provider import HttpProviderSender
from kefu_notifier.adapters.log_sender import LogSender
from kefu_notifier.adapters.metrics import NotifierMetrics, WebhookMetrics
from kefu_notifier.adapters.rendering import JinjaRenderer
from kefu_notifier.adapters.smtp import SmtpEmailSender
from kefu_notifier.adapters.store import (
    CUSTOMERS,
    DELIVERIES,
    DELIVERIES_DUE,
    INDEXES,
    RENDERED_TEXTS,
    DeliveryLog,
    delivery_due_times,
    finished,
)
from kefu_notifier.adapters.webhook_http import HttpWebhookPoster, ResolvingTargetGuard
from kefu_notifier.adapters.webhook_store import (
    SUBSCRIPTIONS,
    WEBHOOK_BODY_FIELDS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_INDEXES,
    SubscriptionDirectory,
    WebhookLog,
    finished_webhook_deliveries,
)
from kefu_notifier.domain.catalogue import ChannelKind
from kefu_notifier.domain.policies import Backoff, QuietHours, RateLimit
from kefu_notifier.domain.ports import ChannelSender, Clock
from kefu_notifier.domain.webhook_ports import TargetGuard, WebhookPoster
from kefu_notifier.domain.webhook_subscription import DisablePolicy
from kefu_notifier.entrypoints import erasure_consumer
from kefu_notifier.entrypoints.api import make_router
from kefu_notifier.entrypoints.consumers import register_consumers
from kefu_notifier.entrypoints.scheduler import AttemptAtOnce, Dispatcher, WebhookDispatcher
from kefu_notifier.entrypoints.webhook_api import make_webhook_router
from kefu_notifier.entrypoints.webhook_consumers import register_webhook_consumers
from kefu_notifier.handlers import NotifierDeps
from kefu_notifier.settings import NotifierSettings
from kefu_notifier.webhook_handlers import WebhookDeps

SERVICE = "notifier"
log = logging.getLogger(__name__)
DESCRIPTION = (
    "Sends every customer notification, templated per purpose and language, over the "
    "customer's channel; retried, rate-limited, quiet at night, and never twice."
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_senders(
    settings: NotifierSettings,
    overrides: Mapping[ChannelKind, ChannelSender] | None = None,
) -> dict[ChannelKind, ChannelSender]:
    """One sender per configured channel; overrides (tests) win over the settings."""
    senders: dict[ChannelKind, ChannelSender] = {}
    timeout = settings.provider_timeout_seconds
    if settings.smtp_host:
        senders[ChannelKind.EMAIL] = SmtpEmailSender(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_sender,
            username=settings.smtp_username,
            password=settings.smtp_password,
            security=settings.smtp_security,
            timeout=timeout,
        )
    http_channels = (
        (ChannelKind.SMS, settings.sms_url, settings.sms_token),
        (ChannelKind.WECHAT, settings.wechat_url, settings.wechat_token),
        (ChannelKind.MARKETPLACE_IM, settings.marketplace_im_url, settings.marketplace_im_token),
        (ChannelKind.APP_PUSH, settings.app_push_url, settings.app_push_token),
        (ChannelKind.WEBHOOK, settings.webhook_url, ""),
    )
    for channel, url, token in http_channels:
        if url:
            senders[channel] = HttpProviderSender(
                channel,
                url=url,
                token=token,
                signing_secret=settings.webhook_secret,
                timeout=timeout,
            )
    if settings.log_unconfigured_channels:
        for channel in ChannelKind:
            if channel is not ChannelKind.WEBHOOK:
                senders.setdefault(channel, LogSender(channel))
    senders.update(overrides or {})
    return senders


def create_app(
    settings: NotifierSettings,
    *,
    channel_overrides: Mapping[ChannelKind, ChannelSender] | None = None,
    clock: Clock | None = None,
    webhook_poster: WebhookPoster | None = None,
    target_guard: TargetGuard | None = None,
) -> FastAPI:
    runtime = build_runtime(SERVICE, settings)
    runtime.indexes.extend(INDEXES)
    runtime.indexes.extend(WEBHOOK_INDEXES)
    # Contacts, routes, rendered texts and webhook bodies sealed at rest (KEFU_DATA_KEYS): the
    # stores seal on write and open on read; the delivery logs' projections leave them out.
    sealed = encryption.sealed_fields(settings.field_cipher())

    def sealed_store(collection: str, **options: Any) -> VersionedDocumentStore:
        return runtime.document_store(collection, sealed=sealed[collection], **options)

    delivery_due = delivery_due_times(runtime.db[DELIVERIES], runtime.db[DELIVERIES_DUE])
    deliveries = sealed_store(DELIVERIES, due=delivery_due)
    deps = NotifierDeps(
        deliveries=deliveries,
        # A customer remembers the idempotency keys of its last requests judged at intake, so a
        # request redelivered after a crash does not take a second rate-limit slot there
        # (``kefu_notifier.intake``); redeliveries follow within seconds, a few keys suffice.
        customers=sealed_store(CUSTOMERS, applied_limit=16),
        delivery_log=DeliveryLog(deliveries.collection, delivery_due),
        renderer=JinjaRenderer(),
        senders=build_senders(settings, channel_overrides),
        quiet_hours=QuietHours(
            start=settings.quiet_hours_start,
            end=settings.quiet_hours_end,
            timezone=ZoneInfo(settings.shop_timezone),
            channels=frozenset(settings.quiet_hours_channels),
        ),
        rate_limit=RateLimit(
            settings.rate_limit_per_customer,
            timedelta(seconds=settings.rate_limit_window_seconds),
        ),
        backoff=Backoff(
            initial=timedelta(seconds=settings.delivery_initial_backoff_seconds),
            cap=timedelta(seconds=settings.delivery_max_backoff_seconds),
            max_attempts=settings.delivery_max_attempts,
        ),
        send_lease=timedelta(seconds=settings.send_lease_seconds),
        provider_timeout=settings.provider_timeout_seconds,
        events_topic=runtime.topic(topics.NOTIFIER_EVENTS),
        metrics=NotifierMetrics(runtime.registry),
        clock=clock or utc_now,
    )
    dispatcher = Dispatcher(
        deps,
        poll_seconds=settings.dispatch_poll_seconds,
        batch_size=settings.dispatch_batch_size,
    )
    deps.wake_dispatcher = dispatcher.wake
    if settings.attempts_at_once > 0:
        at_once = AttemptAtOnce(deps, limit=settings.attempts_at_once)
        deps.at_once = at_once
        runtime.on_shutdown.insert(0, at_once.drain)

    async def dispatch_deliveries() -> None:
        await dispatcher.run()

    runtime.background.append(dispatch_deliveries)

    async def delivery_due_reconcile() -> None:
        # At start and now and then: due times a crash kept from being written.
        while True:
            try:
                await delivery_due.reconcile()
            except Exception:
                log.exception("reconciling due deliveries failed; retrying at the next pass")
            await asyncio.sleep(settings.due_reconcile_seconds)

    runtime.background.append(delivery_due_reconcile)

    register_consumers(runtime, deps)
    webhooks = build_webhooks(
        runtime,
        settings,
        clock or utc_now,
        webhook_poster,
        target_guard,
        webhook_deliveries=sealed_store(WEBHOOK_DELIVERIES),
    )

    # FerretDB has no TTL index: the rendered texts of finished deliveries and the bodies of
    # finished webhook deliveries go in a purge job (each record, its status and times stay
    # for the log and the KPIs).
    retention = RetentionJob(
        [
            RetentionRule(deliveries.collection, "updated_at", RENDERED_TEXTS, where=finished()),
            RetentionRule(
                webhooks.deliveries.collection,
                "updated_at",
                WEBHOOK_BODY_FIELDS,
                where=finished_webhook_deliveries(),
            ),
        ],
        period=timedelta(days=settings.retention_days),
        interval_seconds=settings.retention_scan_seconds,
        clock=clock or utc_now,
    )

    async def free_text_retention() -> None:
        await retention.run()

    runtime.background.append(free_text_retention)
    erasure_consumer.register_erasure(runtime, clock or utc_now)
    routers = [make_router(deps), make_webhook_router(webhooks)]
    app = create_http_app(runtime, routers, description=DESCRIPTION)
    app.state.deps = deps
    app.state.runtime = runtime
    return app


def build_webhooks(
    runtime: ServiceRuntime,
    settings: NotifierSettings,
    clock: Clock,
    poster: WebhookPoster | None,
    guard: TargetGuard | None,
    *,
    webhook_deliveries: VersionedDocumentStore,
) -> WebhookDeps:
    """Webhook subscriptions: their stores, the fan-out consumers and the delivery loop."""
    subscriptions = runtime.document_store(SUBSCRIPTIONS)
    deliveries = webhook_deliveries
    if poster is None:
        http_poster = HttpWebhookPoster(timeout=settings.webhook_timeout_seconds)
        runtime.on_shutdown.append(http_poster.aclose)
        poster = http_poster
    deps = WebhookDeps(
        subscriptions=subscriptions,
        deliveries=deliveries,
        webhook_log=WebhookLog(subscriptions.collection, deliveries.collection),
        directory=SubscriptionDirectory(
            subscriptions.collection, ttl=settings.webhook_subscription_cache_seconds
        ),
        poster=poster,
        guard=guard or ResolvingTargetGuard(allow_private=settings.webhook_allow_private_targets),
        backoff=Backoff(
            initial=timedelta(seconds=settings.webhook_initial_backoff_seconds),
            cap=timedelta(seconds=settings.webhook_max_backoff_seconds),
            max_attempts=settings.webhook_delivery_max_attempts,
        ),
        disable_policy=DisablePolicy(
            after_failures=settings.webhook_disable_after_failures,
            after=timedelta(seconds=settings.webhook_disable_after_seconds),
        ),
        send_lease=timedelta(seconds=settings.webhook_send_lease_seconds),
        history_grace=timedelta(seconds=settings.webhook_history_grace_seconds),
        events_topic=runtime.topic(topics.NOTIFIER_EVENTS),
        metrics=WebhookMetrics(runtime.registry),
        clock=clock,
    )
    dispatcher = WebhookDispatcher(
        deps,
        poll_seconds=settings.webhook_dispatch_poll_seconds,
        batch_size=settings.webhook_dispatch_batch_size,
    )
    deps.wake_dispatcher = dispatcher.wake

    async def dispatch_webhooks() -> None:
        await dispatcher.run()

    runtime.background.append(dispatch_webhooks)
    register_webhook_consumers(
        runtime, deps, group=settings.webhook_group(), gather_ms=settings.webhook_fetch_gather_ms
    )
    return deps
