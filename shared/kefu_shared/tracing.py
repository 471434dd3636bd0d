"""Carrying a trace across a wait: work recorded now and finished later by a background loop.

A timer or a dispatch loop runs outside the message that caused the work, so its spans would
start new traces. Store ``current_trace_carrier()`` with the work and wrap the later step in
``continue_trace(carrier)``: the customer's journey stays one trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate

from kefu_shared.correlation import current_correlation_id

CORRELATION_KEY = "kefu-correlation-id"


def current_trace_carrier() -> dict[str, str]:
    """The W3C trace context and correlation id of the work being done now."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    correlation_id = current_correlation_id.get()
    if correlation_id:
        carrier[CORRELATION_KEY] = correlation_id
    return carrier


@contextmanager
def continue_trace(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Run the later step inside the stored trace, with its correlation id in the logs."""
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(carrier)))
    correlation = current_correlation_id.set(carrier.get(CORRELATION_KEY))
    try:
        yield
    finally:
        current_correlation_id.reset(correlation)
        otel_context.detach(token)
