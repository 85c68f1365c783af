"""JSON logs with the service name, and the order id and event type of the work in hand.

A log line never holds a buyer's phone number (docs/security.md): every number written in
E.164 (``+8613912345678``, or ``%2B8613912345678`` in a URL's path) is masked by the
formatter, whichever code logged it; a number known to be a phone but malformed is masked
where it is logged, with :func:`masked`. Nor does it hold a URL's credentials: the HTTP
clients' own request lines (httpx, with each URL in full) are turned down."""

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

from shared.telemetry import SERVICE, continuing, current_ids

_order_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)
_event_type: contextvars.ContextVar[str | None] = contextvars.ContextVar("event", default=None)


_PHONE = re.compile(r"(?:\+|%2[Bb])[1-9][0-9]{6,14}")


def masked(phone: str) -> str:
    """``phone`` as log lines show it: its first three characters (the calling code, for
    most numbers) and the last four, the rest starred (``+86*******5678``); a string too
    short to keep a part of comes out all stars."""
    if len(phone) < 9:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def phones_masked(text: str) -> str:
    """``text`` with every E.164 number in it :func:`masked`."""
    return _PHONE.sub(lambda found: masked(found.group()), text)


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
            "message": phones_masked(record.getMessage()),
        }
        if (order_id := _order_id.get()) is not None:
            entry["order_id"] = order_id
        if (event := _event_type.get()) is not None:
            entry["event"] = event
        if (ids := current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = phones_masked(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request's URL at INFO, with any credentials in it (a gateway URL may
    # carry its key: https://merchant:KEY@gw/...).
    for noisy in ("aiokafka", "faststream", "uvicorn.access", "httpx", "httpcore"):
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


@contextmanager
def working_for(
    headers: Mapping[str, str] | None, name: str, order_id: str | None
) -> Iterator[None]:
    """A loop's work for an order, done after the event that asked for it (a prepaid charge, a
    text, a status callback, an expiry sweep): a span continuing the trace stored with it
    (:func:`shared.telemetry.continuing`), every log line tagged with the order id."""
    with continuing(headers or {}, name, order_id), bind_order(order_id):
        yield
