"""Tracing and JSON logs.

Tracing always has a real TracerProvider, so trace ids exist in logs and Kafka headers even when
nothing is exported; an exporter is added only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and
store commands get spans of their own only then (``runtime.build_runtime``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from kefu_shared.correlation import current_correlation_id
from kefu_shared.pii import mask_contacts_in_text


def make_tracer_provider(
    service: str, *, otlp_endpoint: str = "", processors: list[SpanProcessor] | None = None
) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": f"kefu-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    for processor in processors or ():
        provider.add_span_processor(processor)
    return provider


def instrument_pymongo(provider: TracerProvider) -> None:
    """Store calls as child spans of the message or request being handled."""
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    instrumentor = PymongoInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace and correlation ids of the work being done.

    Contacts are masked in the message and the traceback whatever logged them (DOMAIN.md 6:
    "in logs always"): a library's exception can quote a customer's input, e.g. pydantic's
    ``input_value``.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": mask_contacts_in_text(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        correlation_id = current_correlation_id.get()
        if correlation_id:
            entry["correlation_id"] = correlation_id
        if record.exc_info:
            entry["error"] = mask_contacts_in_text(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # FastStream gives its logger a coloured stderr handler of its own at import: route it
    # through ours instead, so every line the process writes is one JSON object.
    faststream_logger = logging.getLogger("faststream")
    faststream_logger.handlers.clear()
    faststream_logger.propagate = True
    # Per-message INFO lines from FastStream would drown the service's own logs at load.
    for noisy in ("aiokafka", "uvicorn.access", "faststream"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
