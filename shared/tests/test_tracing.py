"""Work finished later by a background loop stays in its journey's trace and correlation."""

from kefu_shared.correlation import current_correlation_id
from kefu_shared.tracing import continue_trace, current_trace_carrier
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider


def test_a_stored_carrier_restores_the_trace_and_the_correlation_id() -> None:
    tracer = TracerProvider().get_tracer("test")
    token = current_correlation_id.set("journey-9")
    with tracer.start_as_current_span("consume request") as span:
        carrier = current_trace_carrier()
        trace_id = span.get_span_context().trace_id
    current_correlation_id.reset(token)

    assert current_correlation_id.get() is None
    with continue_trace(carrier), tracer.start_as_current_span("dispatch later") as later:
        assert later.get_span_context().trace_id == trace_id
        assert current_correlation_id.get() == "journey-9"
    assert current_correlation_id.get() is None
    assert not trace.get_current_span().get_span_context().is_valid
