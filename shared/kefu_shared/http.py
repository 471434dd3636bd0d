"""The HTTP side of a service: health, readiness, metrics, AsyncAPI, and the service's API.

The FastAPI app owns the process lifecycle: its lifespan starts the broker, the outbox relay and
the service's background loops, and stops them on SIGTERM (uvicorn turns the signal into the
lifespan's shutdown), so one ``uvicorn`` process runs the whole service.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Union

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from faststream.specification import AsyncAPI
from faststream.specification.asyncapi.site import get_asyncapi_html
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from kefu_shared import topics
from kefu_shared.auth import authenticate
from kefu_shared.catalogue import published_contracts
from kefu_shared.correlation import current_correlation_id
from kefu_shared.envelope import Envelope, new_id
from kefu_shared.http_limits import BodySizeLimit, bound_store_waits
from kefu_shared.http_text import RefuseNulCharacters
from kefu_shared.runtime import ServiceRuntime

CORRELATION_HEADER = "X-Correlation-Id"


def declare_publications(runtime: ServiceRuntime) -> None:
    """Show the service's published events in its AsyncAPI document.

    Events go out through the outbox relay, not through FastStream publishers, so the
    publishers declared here exist for the specification only.
    """
    events_topic = topics.EVENTS_TOPIC_OF_SERVICE.get(runtime.name)
    if events_topic is None:
        return
    published = [
        c.cls
        for c in published_contracts()
        if c.owner == runtime.name and c.cls.topic == events_topic
    ]
    if not published:
        return
    # A runtime-built union of the contract classes: one message schema listing every event.
    payload: Any = Envelope[Union[tuple(published)]]  # type: ignore[misc]  # noqa: UP007
    runtime.broker.publisher(
        runtime.topic(events_topic),
        title=f"{runtime.name}-events",
        description=(
            f"Events kefu-{runtime.name} publishes ({', '.join(c.event_type for c in published)}), "
            "in the kefu envelope, keyed by subject, with CloudEvents ce_* headers. "
            "See docs/events.md."
        ),
        schema=payload,
    )


def asyncapi_spec(runtime: ServiceRuntime, description: str = "") -> AsyncAPI:
    declare_publications(runtime)
    return AsyncAPI(
        runtime.broker,
        title=f"kefu-{runtime.name}",
        version="1.0.0",
        description=description or f"Events consumed and published by kefu-{runtime.name}.",
        schema_version="3.0.0",
    )


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def create_http_app(
    runtime: ServiceRuntime,
    routers: Sequence[APIRouter] = (),
    *,
    description: str = "",
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title=f"kefu-{runtime.name}",
        description=description,
        version="1.0.0",
        lifespan=lifespan,
    )
    # BodySizeLimit, added after, wraps the NUL check and so bounds what it reads.
    app.add_middleware(RefuseNulCharacters)
    app.add_middleware(BodySizeLimit)
    bound_store_waits(app)
    tracer = runtime.tracer_provider.get_tracer("kefu.http")
    spec = asyncapi_spec(runtime, description)
    requests_total = Counter(
        "kefu_http_requests_total",
        "HTTP requests answered, by route template and status code.",
        ["service", "method", "route", "status"],
        registry=runtime.registry,
    )
    request_seconds = Histogram(
        "kefu_http_request_duration_seconds",
        "Time to answer an HTTP request, by route template.",
        ["service", "method", "route"],
        registry=runtime.registry,
    )

    @app.middleware("http")
    async def trace_and_correlate(request: Request, call_next):  # type: ignore[no-untyped-def]
        # W3C trace context in, a server span around the request, a correlation id both ways.
        correlation_id = request.headers.get(CORRELATION_HEADER) or new_id()
        token = current_correlation_id.set(correlation_id)
        ctx = propagate.extract(dict(request.headers))
        started = time.perf_counter()
        status = 500
        try:
            with tracer.start_as_current_span(
                f"{request.method} {request.url.path}", context=ctx, kind=otel_trace.SpanKind.SERVER
            ) as span:
                response: Response = await call_next(request)
                status = response.status_code
                # The route template, never the raw path: ids must not become label values.
                route = _route_template(request)
                span.update_name(f"{request.method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.status_code", status)
        finally:
            current_correlation_id.reset(token)
            route = _route_template(request)
            requests_total.labels(runtime.name, request.method, route, str(status)).inc()
            request_seconds.labels(runtime.name, request.method, route).observe(
                time.perf_counter() - started
            )
        response.headers[CORRELATION_HEADER] = correlation_id
        return response

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: consuming, and the broker and the store answer.",
        responses={503: {"description": "A dependency is unavailable."}},
    )
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics.")
    async def metrics() -> Response:
        return Response(generate_latest(runtime.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi", tags=["operations"], summary="AsyncAPI 3.0 document (HTML).")
    async def asyncapi_html() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(spec.to_specification()))

    @app.get("/asyncapi.json", tags=["operations"], summary="AsyncAPI 3.0 document (JSON).")
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(spec.to_specification().to_jsonable())

    # Every service route needs a valid token; roles are checked per route with requires().
    guard = [Depends(authenticate(runtime.settings.keyring()))]
    for router in routers:
        app.include_router(router, dependencies=guard)
    return app
