"""Which event types each topic carries, and parsing a raw record at the edge."""

from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson
from pydantic import ValidationError

from shared.api import field_errors
from shared.events import inventory, notifications, orders, payments, platform
from shared.events.envelope import CloudEvent, EventData, nul_free
from shared.topics import Topic

_CONTRACT_MODULES = (orders, inventory, payments, notifications, platform)


def _models() -> list[type[EventData]]:
    """Every event model of the contract modules (each declares its topic and type)."""
    found: list[type[EventData]] = []
    for module in _CONTRACT_MODULES:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, EventData)
                and value is not EventData
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return found


REGISTRY: dict[Topic, dict[str, type[EventData]]] = {}
for _model in _models():
    REGISTRY.setdefault(_model.topic, {})[_model.event_type.value] = _model


PoisonCode = Literal[
    "empty",
    "not_json",
    "too_deep",
    "not_cloudevent",
    "unknown_type",
    "invalid_data",
    "parse_error",
    "handler_error",
    "order_ref_reused",
    "unknown_group",
]
"""Why a record was dead-lettered: its ``dlq.error`` header, and the ``error`` label of
``caravan_dead_letters_total``. ``order_ref_reused``: an ``order.requested`` whose
(source, order_ref) already names an order of other content (its handler refused it).
``unknown_group``: a redriven record whose ``caravan.redrive-group`` names no group of
Caravan's (every group would have skipped it)."""

IN_THE_VALUE: frozenset[PoisonCode] = frozenset(get_args(PoisonCode)) - {
    "parse_error",
    "handler_error",
    "unknown_group",
}
"""The codes of records refused for what their value holds: sent back as they are (a
redrive without ``--value-file``) they are dead-lettered again, unless their consumer has
changed since (a deploy adding an event type a letter has: ``unknown_type``)."""


class PoisonRecord(Exception):
    """A record that can never be handled as it is. ``code`` is a stable machine reason;
    ``errors`` the fields at fault ({``field``, ``message``}), where they are known.

    Parsing raises it, and so may a handler that finds the record contradicts what it
    handled before (``order_ref_reused``): the consumer then dead-letters the record at once,
    without retries, as it does poison that parsing found."""

    def __init__(self, code: PoisonCode, message: str, envelope: CloudEvent | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.envelope = envelope
        self.errors: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Parsed:
    """A record parsed into its envelope and its typed ``data``."""

    envelope: CloudEvent
    data: EventData


MAX_DEPTH = 32
TOO_DEEP = f"the value is nested deeper than {MAX_DEPTH} levels"

_JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _depth(value: object, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_record(topic: Topic, value: bytes | None) -> Parsed:
    """Parse a record value of ``topic`` or raise :class:`PoisonRecord` saying why not."""
    raw = load_record(value)
    assert value is not None  # load_record refuses none
    return validate_record(topic, raw, value)


def load_record(value: bytes | None) -> dict[str, Any]:
    """The JSON object of a record value (the first half of :func:`parse_record`), or
    :class:`PoisonRecord` saying why there is none."""
    if value is None:
        raise PoisonRecord("empty", "the record has no value")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in exc.msg:
            raise PoisonRecord("too_deep", TOO_DEEP) from exc
        raise PoisonRecord("not_json", not_json(value, exc)) from exc
    if not isinstance(raw, dict):
        kind = _JSON_KINDS.get(type(raw), "value")
        raise PoisonRecord("not_cloudevent", f"the value is a JSON {kind}, not an object")
    # Nesting needs an opening bracket per level: most records are checked by counting.
    brackets = value.count(b"{") + value.count(b"[")
    if brackets > MAX_DEPTH and _depth(raw) > MAX_DEPTH:
        raise PoisonRecord("too_deep", TOO_DEEP)
    return raw


def not_json(value: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why ``value`` is not JSON, in an operator's words (a dead letter's
    ``dlq.error.message``): orjson says "str is not valid UTF-8: surrogates not allowed" of
    any bytes that are not UTF-8, and "invalid literal, expected 'null'" of text that starts
    with an n. Says where, never what the value holds (a buyer's phone, address or text)."""
    if not value.strip():
        return f"the value is empty ({len(value)} bytes{' of white space' if value else ''})"
    if "valid UTF-8" in exc.msg:
        try:
            value.decode()
        except UnicodeDecodeError as bad:
            byte = value[bad.start]
            return f"the value is not UTF-8 text (byte 0x{byte:02x} at offset {bad.start})"
    where = f"at line {exc.lineno} column {exc.colno}"
    if exc.msg.startswith("invalid literal"):
        words = "JSON leaves only true, false and null unquoted"
        return f"the value is not JSON: unquoted text {where} ({words})"
    return f"the value is not JSON: {exc.msg} {where}"


def validate_record(topic: Topic, raw: dict[str, Any], text: bytes | None = None) -> Parsed:
    """:func:`load_record`'s object validated as a CloudEvent of one of ``topic``'s types
    (the second half of :func:`parse_record`); ``text``, the JSON it was read from, if it
    was: what holds no NUL there is not walked for one (:func:`nul_free`)."""
    context = None if text is None else nul_free(text)
    data_error: ValidationError | None = None
    try:
        envelope = CloudEvent.model_validate(raw, context=context)
    except ValidationError as exc:
        if any(err["loc"][:1] != ("data",) for err in exc.errors()):
            raise PoisonRecord("not_cloudevent", _summary(exc)) from exc
        # A sound envelope whose data is missing or no object (a JSON string is a common
        # mistake of a client library): invalid data of its type, answered as such (an
        # order.requested gets its order.rejected), not an unreadable record.
        envelope = CloudEvent.model_validate({**raw, "data": {}}, context=context)
        data_error = exc
    model = REGISTRY.get(topic, {}).get(envelope.type)
    if model is None:
        raise PoisonRecord(
            "unknown_type", f"{envelope.type!r} is not an event of {topic}", envelope
        )
    if data_error is not None:
        raise _invalid_data(data_error, envelope) from data_error
    try:
        data = model.model_validate(envelope.data, context=context)
    except ValidationError as exc:
        raise _invalid_data(exc, envelope) from exc
    return Parsed(envelope=envelope, data=data)


def _invalid_data(exc: ValidationError, envelope: CloudEvent) -> PoisonRecord:
    """``invalid_data`` poison listing every field the validation refused."""
    poison = PoisonRecord("invalid_data", _summary(exc), envelope)
    poison.errors = field_errors(exc, whole="data")
    return poison


def _summary(exc: ValidationError) -> str:
    return "; ".join(f"{e['field']}: {e['message']}" for e in field_errors(exc, "<root>")[:5])
