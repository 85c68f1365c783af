"""The CloudEvents 1.0 envelope (structured JSON mode) that every Kafka record value carries."""

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared.api import worded
from shared.ids import new_id
from shared.topics import EventType, Topic

CONTENT_TYPE = "application/cloudevents+json"
SPEC_VERSION = worded(r"^1\.0$", "1.0, the version of CloudEvents Caravan reads")


class Frozen(BaseModel):
    """Base of every contract model: immutable; unknown fields in input are ignored, so
    that producers may add optional fields within a version."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def unused_fields(self) -> tuple[str, ...]:
        """The fields given that mean nothing for what the rest of the model says (a prepaid
        payment's ``term_months``): kept as given, read by no one, and told as ignored as
        unknown fields are (:func:`shared.events.ignored.ignored_fields`). None here."""
        return ()


def has_nul(value: object) -> bool:
    """True if a string anywhere in ``value`` (JSON: dicts, lists, strings; or models, as a
    model is given another) holds NUL, which PostgreSQL cannot store. Without recursion: a
    body nested hundreds deep is answered, not a ``RecursionError``."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, BaseModel):
            todo.extend(dict(item).values())
    return False


def _has_nul_but_data(envelope: dict[Any, Any]) -> bool:
    """:func:`has_nul` of ``envelope``'s keys and values but its ``data``: its attributes, most
    of them strings, each looked at in place (0.5 µs; 1.3 through a copy without ``data``
    walked by :func:`has_nul`, which each event emitted took), the rest walked by it."""
    rest: list[Any] = []
    for key, item in envelope.items():
        if key == "data":
            continue
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, (dict, list, BaseModel)):
            rest.append(item)
        if isinstance(key, str):
            if "\x00" in key:
                return True
        else:
            rest.append(key)
    return bool(rest) and has_nul(rest)


NUL_FREE = {"nul_free": True}
"""The validation context of a model read from JSON text that holds no ``\\u0000``
(:func:`nul_free`): the NUL checks need not walk what it holds."""


def nul_free(text: bytes) -> dict[str, bool] | None:
    """:data:`NUL_FREE` if no string of the JSON ``text`` can hold NUL, else None. JSON writes
    a NUL in a string only as ``\\u0000`` (a raw one, as any control character, is no JSON),
    so text without those six bytes has none; one with them (or with an escaped backslash
    before ``u0000``) is walked by :func:`has_nul` as before. Finding them takes 0.05 µs where
    the walk of an envelope took 1.1."""
    return None if b"\\u0000" in text else NUL_FREE


def _walked(info: ValidationInfo) -> bool:
    """Whether what is validated must be walked for NUL: unless read from text
    :func:`nul_free` found none in."""
    return info.context is not NUL_FREE


class NoNul(Frozen):
    """A model whose text may not hold NUL (U+0000), which PostgreSQL cannot store: refused
    when read, not when a database refuses it half way through."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any, info: ValidationInfo) -> Any:
        if _walked(info) and has_nul(data):
            raise ValueError("text may not contain NUL characters")
        return data


MAX_FEN = 2**63 - 1  # what PostgreSQL's bigint holds: more is refused here, not there
Fen = Annotated[int, Field(strict=True, ge=0, le=MAX_FEN)]
"""An amount of money: a whole number of fen, never a float (1 CNY = 100 fen)."""

MAX_ORDER_ID = 36
OrderId = Annotated[str, Field(min_length=1, max_length=MAX_ORDER_ID)]
"""An order's id in an event: the orders service makes UUIDs, and every service keeps them
in a ``varchar(36)``; a longer one, or an empty one, is refused when read (``invalid_data``,
naming the field and the limit), not by a database after a handler's retries
(``handler_error``) nor kept as an order of no id."""
MAX_LOAN_ID = 36
LoanId = Annotated[str, Field(min_length=1, max_length=MAX_LOAN_ID)]
"""A loan's id in an event: the payments service makes UUIDs and keeps them in a
``varchar(36)``; refused when read as :data:`OrderId` is, where an empty one or one of 10 kB
reached the orders' and notifications' tables."""


def _whole_segments(given: str) -> str:
    if given.startswith("/") or given.endswith("/") or "//" in given:
        raise PydanticCustomError("segment", "must not begin or end with / nor hold //")
    return given


WHOLE_SEGMENTS = AfterValidator(_whole_segments)
"""Of a buyer's id, wherever one is stored (``PUT /credit-lines/{buyer_id}``, a seed file's
``buyers``): ``b1/`` or ``b1//adjustments`` is refused, not a second id beside ``b1`` that
the HTTP API could not name (a ``{...:path}`` id may hold ``/`` between segments, never an
empty one)."""


class EventData(Frozen):
    """The ``data`` of one event type. Subclasses name their topic and type once."""

    topic: ClassVar[Topic]
    event_type: ClassVar[EventType]

    def partition_key(self) -> str:
        """The record key: the order id unless a subclass says otherwise."""
        return str(getattr(self, "order_id"))  # noqa: B009 - subclasses without it override


def check_source(source: str) -> str:
    """``source``, if an event may have it as its ``source``; else a ValueError saying why.
    ``|`` separates the source from the id in the inbox's key (``<source>|<id>``): source
    ``a|b`` with id ``c`` would be source ``a`` with id ``b|c``. A URI-reference, as the
    contract's source is, has none (it would be ``%7C``). NUL no PostgreSQL text holds (the
    envelope refuses it anywhere, ``has_nul``). Whoever names a source in its settings (a
    platform app, ``platform/<app>``) is refused by this at start."""
    if "|" in source:
        raise ValueError("a source may not contain '|' (a URI-reference has none)")
    if "\x00" in source:
        raise ValueError("a source may not contain NUL (PostgreSQL cannot store it)")
    return source


RFC_3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
"""A date and time as RFC 3339 writes one (section 5.6: ``T`` and ``Z`` either case, or a
space for ``T`` as its note allows), the contract's ``time``."""


def _rfc_3339(given: object) -> object:
    """``time`` as the contract writes it, RFC 3339 text, or a datetime Caravan builds
    (:func:`new_event`): pydantic alone took a number as seconds since 1970 (1796505600, or
    "1796505600"), an order placed at a time its storefront never meant, and "08:00" without
    seconds."""
    if isinstance(given, datetime) or (isinstance(given, str) and RFC_3339.fullmatch(given)):
        return given
    raise PydanticCustomError(
        "rfc_3339", "should be an RFC 3339 date and time text, e.g. 2026-11-30T08:00:00Z"
    )


def _json_content(given: str | None) -> str | None:
    """``datacontenttype``, if it says what ``data`` is in structured JSON mode: JSON
    (``application/json``, in any case, with parameters such as ``charset=utf-8``). One
    naming another type (``application/xml``) mislabels the event, and was taken."""
    if given is not None and given.split(";")[0].strip().lower() != "application/json":
        raise PydanticCustomError(
            "content_type", "should be application/json: data is a JSON object"
        )
    return given


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event with the project's ``correlationid``/``causationid`` extensions.

    ``data`` is kept as a plain mapping here; :func:`shared.events.registry.parse_record` turns
    it into the typed model for its ``type``.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: str = Field(pattern=SPEC_VERSION)
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=128)
    time: Annotated[AwareDatetime, BeforeValidator(_rfc_3339)]
    datacontenttype: Annotated[str | None, AfterValidator(_json_content)] = "application/json"
    data: dict[str, Any]
    correlationid: str | None = None
    causationid: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, value: Any, info: ValidationInfo) -> Any:
        """NUL in the envelope (an ``id`` or ``source``, the inbox's key; an extension) is no
        CloudEvent here. ``data`` is its type's to refuse (``invalid_data``: an order.requested
        gets its answer)."""
        if _walked(info) and isinstance(value, dict) and _has_nul_but_data(value):
            raise ValueError("the envelope's text may not contain NUL characters")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, source: str) -> str:
        return check_source(source)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def new_event(
    data: EventData,
    *,
    source: str,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    time: datetime | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    """Wrap ``data`` in a fresh envelope with a new id (or ``event_id``)."""
    return CloudEvent(
        specversion="1.0",
        id=event_id or new_id(),
        source=source,
        type=data.event_type.value,
        time=time or datetime.now(UTC),
        data=data.model_dump(mode="json", exclude_none=True),
        correlationid=correlation_id,
        causationid=causation_id,
    )
