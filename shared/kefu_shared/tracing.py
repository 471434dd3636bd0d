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


def current_trace_carrier() -> dict[str, str]:
    """The W3C trace context of the work being done now (empty if none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def continue_trace(carrier: Mapping[str, str] | None) -> Iterator[None]:
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        otel_context.detach(token)
