"""The composition root: settings in, a runnable FastAPI app (consumers, loops, API) out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import FastAPI
from kefu_shared.crypto import SealedFields
from kefu_shared.envelope import utcnow
from kefu_shared.http import create_http_app
from kefu_shared.retention import RetentionJob, RetentionRule
from kefu_shared.runtime import build_runtime
from kefu_shared.settings import load_settings
from kefu_shared.topics import Channel

from kefu_feedback import handlers
from kefu_feedback.adapters import store
from kefu_feedback.adapters.metrics import FeedbackMetrics
from kefu_feedback.domain.links import SurveyLinks
from kefu_feedback.domain.policy import load_calendar, load_policy
from kefu_feedback.entrypoints import api, consumers, erasure_consumer
from kefu_feedback.settings import DEV_LINK_SECRET, FeedbackSettings

SERVICE = "feedback"
DESCRIPTION = (
    "Satisfaction surveys after inquiries, after-sales cases and in quarterly rounds; the "
    "handbooks' KPIs (response times, SLAs, FCR, CSAT, conversion, scorecards, peak hours, "
    "frequent questions) over HTTP, as Prometheus gauges and as a report."
)
log = logging.getLogger(__name__)


def create_app(
    settings: FeedbackSettings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    settings = settings or load_settings(FeedbackSettings)
    runtime = build_runtime(SERVICE, settings)
    runtime.indexes.extend(store.INDEXES)
    secret = settings.survey_link_secret.get_secret_value()
    if secret == DEV_LINK_SECRET:
        log.warning("KEFU_FEEDBACK_SURVEY_LINK_SECRET is the development default: set one")
    # A survey keeps no contact, but its invitation's notification request does until relayed:
    # sealed in the outbox like every event of a sealed store.
    surveys = runtime.document_store(
        store.SURVEYS, sealed=SealedFields(settings.field_cipher(), (), scope=store.SURVEYS)
    )
    customers = runtime.document_store(store.CUSTOMERS)
    rounds = runtime.document_store(store.ROUNDS)
    deps = handlers.Deps(
        facts=store.FactStore(runtime.db[store.FACTS]),
        surveys=surveys,
        customers=customers,
        rounds=rounds,
        queries=store.SurveyQueries(surveys.collection, customers.collection, rounds.collection),
        policy=load_policy(settings.policy_file or None),
        calendar=load_calendar(settings.business_hours_file or None),
        links=SurveyLinks(settings.survey_base_url, secret),
        metrics=FeedbackMetrics(runtime.registry),
        topic=runtime.topic,
        clock=clock,
    )
    consumers.register(runtime, deps, gather_ms=settings.event_fetch_gather_ms)

    # Rounds are durable: the round document holds who is still to be invited, so a restart
    # goes on where the last process stopped. New rounds wake the loop at once.
    wake = asyncio.Event()
    deps.wake_rounds = wake.set

    async def survey_rounds() -> None:
        while True:
            wake.clear()
            if settings.quarterly_round_sample_size:
                await handlers.start_quarterly_round(
                    deps,
                    settings.quarterly_round_sample_size,
                    settings.round_lookback_days,
                    settings.quarterly_round_day,
                )
            handled = await handlers.issue_round_invitations(deps, batch=settings.round_batch_size)
            if handled:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=settings.round_scan_seconds)

    window = timedelta(hours=settings.gauge_window_hours)
    channels = tuple(c.value for c in Channel)

    async def kpi_gauges() -> None:
        async def refresh() -> None:
            try:
                await handlers.refresh_gauges(deps, window, channels)
            except Exception:
                deps.metrics.refresh_failures.inc()
                raise

        await handlers.run_every(settings.gauge_refresh_seconds, refresh, "KPI gauges")

    runtime.background.extend([survey_rounds, kpi_gauges])
    erasure_consumer.register_erasure(runtime, clock)
    # FerretDB has no TTL indexes: customers' free text past its retention goes in a purge job.
    retention = RetentionJob(
        [
            RetentionRule(
                runtime.db[store.SURVEYS],
                timestamp_field="answer.answered_at",
                fields=("answer.comment",),
            )
        ],
        period=timedelta(days=settings.retention_days),
        interval_seconds=settings.retention_scan_seconds,
        clock=clock,
    )

    async def free_text_retention() -> None:
        await retention.run()

    runtime.background.append(free_text_retention)
    app = create_http_app(runtime, [api.staff_router(deps)], description=DESCRIPTION)
    # The survey link is authorised by its own token, not by a staff login: mounted on the app
    # itself, outside the kernel's staff routes.
    app.include_router(api.public_router(deps))
    app.state.deps = deps
    app.state.runtime = runtime
    return app
