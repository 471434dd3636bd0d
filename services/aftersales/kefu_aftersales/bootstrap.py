"""The composition root: settings -> runtime, stores, use-case dependencies, consumers, HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import FastAPI
from kefu_shared.audit import AUDIT_COLLECTION, AUDIT_INDEXES, AuditLog
from kefu_shared.envelope import utcnow
from kefu_shared.http import create_http_app
from kefu_shared.retention import RetentionJob, RetentionRule
from kefu_shared.runtime import build_runtime
from kefu_shared.settings import load_settings

from kefu_aftersales import handlers
from kefu_aftersales.adapters import encryption, mongo
from kefu_aftersales.adapters.metrics import AftersalesMetrics
from kefu_aftersales.domain.flows import load_flows
from kefu_aftersales.domain.inference import load_inferrer
from kefu_aftersales.domain.policy import load_policy
from kefu_aftersales.entrypoints import api, consumers, erasure_consumer
from kefu_aftersales.settings import AftersalesSettings

SERVICE = "aftersales"
DESCRIPTION = (
    "After-sales cases: requests checked against the order and reviewed by the shop's policy, "
    "the return / exchange / refund / repair state machine with customer progress notices, "
    "supervisor decisions and overrides, and negative marketplace reviews with reply deadlines."
)


def create_app(
    settings: AftersalesSettings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    settings = settings or load_settings(AftersalesSettings)
    runtime = build_runtime(SERVICE, settings)
    runtime.indexes.extend([*mongo.INDEXES, *AUDIT_INDEXES])
    # Contacts sealed at rest (KEFU_DATA_KEYS): the stores seal on write and open on read; the
    # case queries open what they find with the same table.
    sealed = encryption.sealed_fields(settings.field_cipher())

    cases = runtime.document_store(mongo.CASES, sealed=sealed[mongo.CASES])
    deps = handlers.Deps(
        cases=cases,
        orders=runtime.document_store(mongo.ORDERS, sealed=sealed[mongo.ORDERS]),
        claims=runtime.document_store(mongo.CLAIMS),
        inquiries=runtime.document_store(mongo.INQUIRIES),
        queries=mongo.CaseQueries(cases.collection, sealed[mongo.CASES].open),
        audit=AuditLog(runtime.db[AUDIT_COLLECTION]),
        policy=load_policy(settings.policy_file or None),
        flows=load_flows(settings.flows_file or None),
        inferrer=load_inferrer(settings.inference_file or None),
        metrics=AftersalesMetrics(runtime.registry),
        topic=runtime.topic,
        clock=clock,
        stale_claim=timedelta(seconds=settings.stale_claim_seconds),
    )
    consumers.register(runtime, deps, settings)

    async def case_timers() -> None:
        await handlers.run_every(
            settings.timer_scan_seconds, lambda: handlers.fire_due_timers(deps), "case timers"
        )

    runtime.background.append(case_timers)
    erasure_consumer.register_erasure(runtime, clock)
    # FerretDB has no TTL indexes: customers' free text past its retention goes in a purge job.
    retention = RetentionJob(
        [
            RetentionRule(
                runtime.db[mongo.CASES], timestamp_field="closed_at", fields=("description", "note")
            )
        ],
        period=timedelta(days=settings.retention_days),
        interval_seconds=settings.retention_scan_seconds,
        clock=clock,
    )
    # Marketplace review texts (and the replies that quote them) have their own period.
    review_retention = RetentionJob(
        [RetentionRule(runtime.db[mongo.CASES], "closed_at", fields=mongo.REVIEW_TEXTS)],
        period=timedelta(days=settings.review_retention_days),
        interval_seconds=settings.retention_scan_seconds,
        clock=clock,
    )

    async def free_text_retention() -> None:
        await retention.run()

    async def review_text_retention() -> None:
        await review_retention.run()

    runtime.background.extend([free_text_retention, review_text_retention])

    app = create_http_app(runtime, [api.router(deps)], description=DESCRIPTION)
    app.state.deps = deps
    app.state.runtime = runtime
    return app
