"""OpenTelemetry context propagation through Kafka headers."""

from opentelemetry import propagate


def current_trace_headers() -> dict[str, str]:
    """The W3C trace context of the current span, as record headers (empty when not tracing)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
