"""The composition root: settings -> runtime, stores, tables, use-case dependencies, consumers,
the timer loop and HTTP."""

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

from kefu_orders.adapters import encryption, mongo, tables
from kefu_orders.adapters.metrics import OrdersMetrics
from kefu_orders.domain.order import Rules
from kefu_orders.entrypoints import api, consumers, erasure_consumer
from kefu_orders.entrypoints.timers import run_timers
from kefu_orders.handlers import Deps, six_digit_code
from kefu_orders.settings import OrdersSettings

SERVICE = "orders"
DESCRIPTION = (
    "Follows every order from placement to delivery: review and order note, courier coverage, "
    "unpaid follow-up (reminders, lost orders, expiry), shipping notices, verified changes and "
    "sales attribution."
)


def create_app(
    settings: OrdersSettings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    new_code: Callable[[], str] = six_digit_code,
) -> FastAPI:
    settings = settings or load_settings(OrdersSettings)
    runtime = build_runtime(SERVICE, settings)
    runtime.indexes.extend([*mongo.INDEXES, *AUDIT_INDEXES])
    rules = Rules(
        couriers=tables.coverage_table(settings.couriers_file),
        notes=tables.note_format(settings.note_units_file),
        note_language=settings.note_language,
        shop_timezone=settings.shop_timezone,
        follow_up=settings.follow_up(),
        verification=settings.verification(),
        attribution_lookback=timedelta(days=settings.attribution_lookback_days),
    )
    # Contacts and addresses sealed at rest (KEFU_DATA_KEYS): the store seals on write and
    # opens on read; the read queries open what they find with the same table.
    sealed = encryption.sealed_fields(settings.field_cipher())[mongo.ORDERS]
    orders = runtime.document_store(mongo.ORDERS, sealed=sealed)
    deps = Deps(
        orders=orders,
        timelines=runtime.document_store(mongo.TIMELINES),
        queries=mongo.OrderQueries(orders.collection, sealed.open),
        roster=mongo.RosterStore(
            runtime.db[mongo.SETTINGS], tables.duty_roster(settings.duty_roster_file)
        ),
        rules=rules,
        metrics=OrdersMetrics(runtime.registry),
        topic=runtime.topic,
        retention=timedelta(days=settings.evidence_retention_days),
        clock=clock,
        new_code=new_code,
    )
    consumers.register(runtime, deps, gather_ms=settings.event_fetch_gather_ms)

    async def order_timers() -> None:
        await run_timers(deps, every_seconds=settings.timer_scan_seconds)

    # FerretDB has no TTL index: contact evidence past its retention goes in a purge job (the
    # timeline of a customer nobody talked to for that long is dropped whole).
    purge = RetentionJob(
        [RetentionRule(deps.timelines.collection, "updated_at", delete=True)],
        period=deps.retention,
        interval_seconds=settings.retention_scan_seconds,
        clock=clock,
    )

    async def evidence_retention() -> None:
        await purge.run()

    runtime.background.extend([order_timers, evidence_retention])
    erasure_consumer.register_erasure(runtime, clock)
    audit = AuditLog(runtime.db[AUDIT_COLLECTION])
    app = create_http_app(runtime, [api.make_router(deps, audit)], description=DESCRIPTION)
    app.state.deps = deps
    app.state.runtime = runtime
    return app
