"""Tracing with OpenTelemetry: one trace per order's saga, across the five services.

Each emitted event carries the W3C trace context of the span that emitted it in its record
headers (through the outbox); each consumer continues that trace in a span of its own. Spans
are exported where ``CARAVAN_TRACE_DIR`` points (one JSON-lines file per service, which the
tests read), to an OpenTelemetry collector over OTLP when the standard ``OTEL_*`` variables ask
(:mod:`shared.collector`), or nowhere by default.
"""

import contextvars
import json
import os
import threading
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Status, StatusCode

# The service the running code works for. A process hosting several services sets it in each
# one's task (shared.main), so that its log lines, spans and metrics carry the right name.
SERVICE: contextvars.ContextVar[str | None] = contextvars.ContextVar("service", default=None)

# Each service's tracer provider and tracer (one per service, so that its spans name it as
# their ``service.name`` even when another service shares the process).
_providers: dict[str, TracerProvider] = {}
_tracers: dict[str | None, trace.Tracer] = {}
_exporters: list[SpanExporter] = []

STOP_SECONDS = 2.0  # what a stop waits for the exporters to deliver the last spans


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one JSON line to a file: its service, name, ids, when it
    began (UTC), how long it took, its status (``unset``, ``ok``, ``error``, with the error's
    words) and its attributes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                ctx = span.get_span_context()
                parent = span.parent
                out.write(
                    json.dumps(
                        {
                            "service": span.resource.attributes.get("service.name"),
                            "name": span.name,
                            "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
                            "span_id": f"{ctx.span_id:016x}" if ctx else None,
                            "parent_id": f"{parent.span_id:016x}" if parent else None,
                            "start": _utc(span.start_time),
                            "duration_ms": _millis(span.start_time, span.end_time),
                            "status": span.status.status_code.name.lower(),
                            "status_message": span.status.description,
                            "attributes": dict(span.attributes or {}),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


def _utc(nanoseconds: int | None) -> str | None:
    if nanoseconds is None:
        return None
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000).isoformat()


def _millis(start: int | None, end: int | None) -> float | None:
    return None if start is None or end is None else round((end - start) / 1e6, 3)


def configure_tracing(service: str) -> None:
    """Install ``service``'s tracer provider (spans are only exported when configured); the
    first one installed is also the process's.

    With no exporter, no span is recorded (the sampler drops them all): a consumer span that
    nobody exported took about 80 µs of CPU per record handled, a dropped one takes 45. The
    trace context still flows: each dropped span has its ids, which go into record headers
    and log lines, marked not sampled (so a process downstream that does export records no
    span of such a trace either)."""
    resource = Resource.create({"service.name": f"caravan-{service}"})
    exporters: list[SpanExporter] = []
    if trace_dir := os.environ.get("CARAVAN_TRACE_DIR"):
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        exporters.append(JsonLinesExporter(Path(trace_dir) / f"{service}.jsonl"))
    if _otlp_wanted(os.environ):
        from shared.collector import CollectorExporter

        exporters.append(CollectorExporter())  # its endpoint, headers, timeout: the OTEL_* ones
    provider = TracerProvider(resource=resource, sampler=None if exporters else ALWAYS_OFF)
    _exporters.extend(exporters)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    if not _providers:
        trace.set_tracer_provider(provider)  # the process's, for code outside any service
    _providers[service] = provider
    _tracers[service] = provider.get_tracer("caravan")


def _otlp_wanted(env: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for spans sent to a collector over OTLP (HTTP,
    protobuf): ``OTEL_TRACES_EXPORTER=otlp``, or unset with an OTLP endpoint given (``none``
    sends nothing, as the specification says)."""
    exporters = {name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")} - {""}
    if exporters:
        return "otlp" in exporters
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(env.get(name) for name in endpoints)


def shutdown_tracing() -> None:
    """Export the spans not exported yet, and stop. Exporters still at it after
    ``STOP_SECONDS`` (a collector that does not answer, whose exporter retries a batch for
    ten seconds) are shut, which ends their retries: those spans are lost."""

    def shut_exporters() -> None:
        for exporter in _exporters:
            exporter.shutdown()

    give_up = threading.Timer(STOP_SECONDS, shut_exporters)
    give_up.start()
    try:
        for provider in _providers.values():
            provider.shutdown()
    finally:
        give_up.cancel()


_process_tracer = trace.get_tracer("caravan")


def _tracer() -> trace.Tracer:
    """The tracer of the service the running code works for (the process's otherwise)."""
    return _tracers.get(SERVICE.get(), _process_tracer)


def current_trace_headers() -> dict[str, str]:
    """The W3C trace context of the current span, as record headers (empty when not tracing)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def trace_headers_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C trace context that ``headers`` carry (say a dead letter's), as record headers
    of their own (empty if they carry none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=propagate.extract(dict(headers)))
    return carrier


@contextmanager
def _span(
    headers: Mapping[str, str],
    name: str,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[trace.Span]:
    """A span of the running code's service, current inside the block: a child of the span
    whose context ``headers`` carry (with their baggage), or of a new trace.

    It is the tracer's ``start_as_current_span`` without its layers for a span not recorded
    (no exporter: every span of the headline's services), which are most of a consumed
    record's span (:func:`consuming`: 9.3 µs a record, 4.9 of them there; 2.8 with one
    ``attach``). A recorded span is ended, and an exception raised in the block recorded on
    it, by the tracer's own ``use_span``."""
    parent = propagate.extract(headers)
    span = _tracer().start_span(name, parent, kind, attributes)
    token = context.attach(trace.set_span_in_context(span, parent))
    try:
        if span.is_recording():
            with trace.use_span(
                span, end_on_exit=True, record_exception=False, set_status_on_exception=False
            ):
                try:
                    yield span
                except Exception as exc:  # as use_span would record it, numbers masked
                    message = record_failure(span, exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
                    raise
        else:
            yield span  # nothing to end, nor to record an exception on
    finally:
        context.detach(token)


def record_failure(span: trace.Span, exc: BaseException) -> str:
    """Record ``exc`` on ``span`` as the tracer records one (an ``exception`` event), with
    every phone number in its message and traceback masked as the log lines mask them: a
    database error's ``DETAIL`` may quote a row, a gateway's answer the number it refused.
    Returns the message so masked."""
    from shared.logs import phones_masked  # shared.logs imports this module

    message = phones_masked(str(exc))
    stacktrace = phones_masked("".join(traceback.format_exception(exc)))
    masked = {"exception.message": message, "exception.stacktrace": stacktrace}
    span.record_exception(exc, attributes=masked)
    return message


def consuming(
    topic: str, headers: Sequence[tuple[str, bytes | None]], attributes: Mapping[str, Any]
) -> AbstractContextManager[trace.Span]:
    """A consumer span continuing the trace that the record's headers carry (a header with
    no value reads as empty)."""
    carrier = {k: (v or b"").decode("latin-1") for k, v in headers}
    return _span(carrier, f"{topic} process", trace.SpanKind.CONSUMER, attributes)


def continuing(
    headers: Mapping[str, str], name: str, order_id: str | None
) -> AbstractContextManager[trace.Span]:
    """A span continuing a trace whose context was stored earlier (work done later by a
    loop on behalf of an event, such as a prepaid charge or a text sent)."""
    attributes = {"caravan.order_id": order_id} if order_id else {}
    return _span(dict(headers), name, attributes=attributes)


def serving(
    method: str, path: str, headers: Mapping[str, str]
) -> AbstractContextManager[trace.Span]:
    """A server span for one HTTP request, continuing the caller's trace if it sent one;
    named after the method until the caller names its route."""
    attributes = {"http.request.method": method, "url.path": path}
    return _span(dict(headers), method, trace.SpanKind.SERVER, attributes)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, for log lines."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
