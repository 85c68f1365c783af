"""JSON logs with the service name, and the order id and event type of the work in hand."""

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from shared.telemetry import SERVICE, current_ids

_order_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)
_event_type: contextvars.ContextVar[str | None] = contextvars.ContextVar("event", default=None)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": SERVICE.get() or self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (order_id := _order_id.get()) is not None:
            entry["order_id"] = order_id
        if (event := _event_type.get()) is not None:
            entry["event"] = event
        if (ids := current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faststream", "uvicorn.access"):
        logging.getLogger(noisy).setLevel("WARNING")


@contextmanager
def bind_order(order_id: str | None, event_type: str | None = None) -> Iterator[None]:
    """Tag every log line inside the block with the order id (and event type)."""
    t1 = _order_id.set(order_id)
    t2 = _event_type.set(event_type)
    try:
        yield
    finally:
        _order_id.reset(t1)
        _event_type.reset(t2)
