"""The composition root: settings -> runtime, stores, use-case dependencies, consumers, HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import FastAPI
from kefu_shared.audit import AUDIT_COLLECTION, AuditLog
from kefu_shared.envelope import utcnow
from kefu_shared.http import create_http_app
from kefu_shared.runtime import build_runtime
from kefu_shared.settings import load_settings

from kefu_inquiry import handlers, privacy
from kefu_inquiry.adapters import encryption, mongo
from kefu_inquiry.adapters.metrics import InquiryMetrics
from kefu_inquiry.domain.rules_loader import default_classifier
from kefu_inquiry.entrypoints import api, consumers, privacy_api, privacy_consumer
from kefu_inquiry.settings import InquirySettings

SERVICE = "inquiry"


def create_app(
    settings: InquirySettings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    settings = settings or load_settings(InquirySettings)
    runtime = build_runtime(SERVICE, settings)
    channels = settings.served_channels()
    # Contacts sealed at rest (KEFU_DATA_KEYS): the store and the read side share the cipher.
    sealed = encryption.sealed_fields(settings.field_cipher())
    sla_due = mongo.sla_due_times(runtime.db)
    inquiries = runtime.document_store(mongo.INQUIRIES, sealed=sealed, due=sla_due)
    deps = handlers.Deps(
        inquiries=inquiries,
        customers=runtime.document_store(mongo.CUSTOMERS),
        queries=mongo.InquiryQueries(runtime.db[mongo.INQUIRIES], sealed.open, sla_due),
        agents=mongo.AgentDirectory(runtime.db[mongo.AGENTS]),
        knowledge=mongo.KnowledgeBase(
            runtime.db[mongo.ARTICLES],
            runtime.db[mongo.QUICK_REPLIES],
            cache_seconds=settings.knowledge_cache_seconds,
        ),
        classifier=default_classifier(settings.rules_file or None),
        sla_policy=settings.sla_policy(),
        metrics=InquiryMetrics(runtime.registry),
        topic=runtime.topic,
        channels=channels,
        bot_min_score=settings.bot_min_score,
        clock=clock,
    )
    consumers.register(runtime, deps, channels, settings.consumer_group_for)

    # Erasure requests out (admin API) and in (every service erases its own data).
    privacy_store = runtime.document_store(privacy.PRIVACY)
    privacy_consumer.register(runtime, deps, privacy_store, clock)

    async def sla_timers() -> None:
        await handlers.run_every(
            settings.sla_scan_seconds, lambda: handlers.fire_due_slas(deps), "sla timers"
        )

    async def sla_due_reconcile() -> None:
        await handlers.run_every(
            settings.sla_reconcile_seconds, sla_due.reconcile, "sla due times reconcile"
        )

    async def queue_dispatcher() -> None:
        await handlers.run_every(
            settings.dispatch_scan_seconds, lambda: handlers.dispatch_queue(deps), "dispatcher"
        )

    async def query_indexes() -> None:
        # Not through runtime.indexes: the kernel sends all indexes of a collection in one
        # createIndexes, and FerretDB 1.24 panics (connection closed) when that command names
        # several indexes that already exist, i.e. on every restart. One command per index
        # works; the indexes only speed queries up, so building them after start is fine.
        await handlers.run_until_done(lambda: mongo.create_indexes(runtime.db), "indexes")

    async def transcript_retention() -> None:
        period = timedelta(days=settings.retention_days)
        await handlers.run_every(
            settings.retention_scan_seconds,
            lambda: privacy.purge_transcripts(deps, period),
            "retention",
        )

    runtime.background.extend(
        [query_indexes, sla_timers, sla_due_reconcile, queue_dispatcher, transcript_retention]
    )
    app = create_http_app(
        runtime,
        [
            api.router(deps, AuditLog(runtime.db[AUDIT_COLLECTION])),
            privacy_api.router(privacy_store, runtime.topic, clock),
        ],
        description="Multi-channel intake, classification, bot answers, routing and SLAs.",
    )
    app.state.deps = deps
    app.state.runtime = runtime
    return app
