"""Spans sent to an OpenTelemetry collector over OTLP (HTTP, protobuf), configured by the
standard ``OTEL_EXPORTER_OTLP_*`` variables. Imported only when they ask for it.

A collector that does not answer, or refuses the spans (an HTTP 4xx), is said once, as a
warning (:data:`shared.logs.COLLECTOR_OUTAGE` turns the exporter's line per retry and error per
batch into that), and once when it takes them again; the spans meanwhile are lost. A stop gives it
:data:`shared.telemetry.STOP_SECONDS`."""

import logging
import threading
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from shared.logs import COLLECTOR_OUTAGE

log = logging.getLogger(__name__)


class CollectorExporter(OTLPSpanExporter):
    """The SDK's exporter, telling when the collector answers again, and shut at most once
    (a stop may give up on it before its processor shuts it)."""

    def __init__(self) -> None:
        super().__init__()
        self._shut = threading.Lock()
        self._open = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self._open:  # given up on: its processor's last batch
            return SpanExportResult.FAILURE
        result = super().export(spans)
        if result is SpanExportResult.SUCCESS and COLLECTOR_OUTAGE.over():
            log.info("the OTLP collector answers again (%s): spans are exported", self._endpoint)
        return result

    def shutdown(self) -> None:
        """Ends any retry under way at once."""
        with self._shut:
            if not self._open:
                return
            self._open = False
        super().shutdown()  # type: ignore[no-untyped-call]
