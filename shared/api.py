"""What Caravan's HTTP APIs and their clients (the ``caravan`` command, the operations page,
the tests) share, without the servers' imports (FastAPI, SQLAlchemy: a command must not pay
for them): the headers a call carries its token in, and validation errors said field by
field."""

import math
from collections.abc import Callable
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError


DATABASE_AWAY = "the database is not reachable; retry"
"""The detail of the 503 a service answers while its database is away (``caravan``'s admin
commands tell it from other 503s by it)."""
DATABASE_BUSY = "the database takes no more connections now; retry"
"""The detail of the 503 a service answers while PostgreSQL refuses it a connection for having
as many as it takes (``max_connections``), or its own pool's are all in use: reachable, so not
:data:`DATABASE_AWAY` (a drill holding every connection was told the database was away)."""


DATABASE_MUTE = "the database did not answer within"
"""How the detail of the 503 of a request whose database work PostgreSQL did not answer within
``CARAVAN_HTTP_DB_TIMEOUT_SECONDS`` begins (a server frozen): ``the database did not answer
within 8 s; retry``."""


SERVICE_LOOP_LATE = "this service's event loop was"
"""How the detail of the 503 of a request whose database work timed out while the service's own
event loop was as late begins (:func:`shared.loop_lag.not_heard`): ``this service's event loop
was 3.1 s late; PostgreSQL's answer may not have been heard within 8 s; retry``, PostgreSQL not
to blame (``caravan``'s admin commands say it of the service)."""


ORDER_CONFIRMED = "Order already confirmed"
"""The title of the 409 the orders API answers a cancellation of a confirmed order with, which
``caravan orders cancel`` tells apart (a commit's lost race is a 409 too) to say the way for it:
``caravan payments void-sold``, once its buyer is refunded."""


DATABASE_REFUSES = "the database refuses the work for now"
"""How the detail of the 503 a service answers while PostgreSQL answers and refuses the work
(a disk full, out of memory, a standby after a failover, a lock not granted in time) begins:
``the database refuses the work for now: its disk is full (SQLSTATE 53100); retry``. It said
the database was not reachable (session 49's drill filled its disk)."""


def bearer_headers(token: str | None) -> dict[str, str]:
    """The headers a client calls a Caravan API with (none without a token)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


_PYDANTIC_WORDING = {"value_error": "Value error, ", "assertion_error": "Assertion failed, "}
"""What pydantic puts before the message of a validator's ``ValueError`` (or failed
``assert``): its wording, not ours, kept out of what users read."""


PATTERN_WORDS: dict[str, str] = {}
"""What a value of each pattern :func:`worded` is, in words."""


def plural(n: object, thing: str) -> str:
    """``n`` ``thing``, in the plural unless one: 1 warning, 0 warnings, 3 characters."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _whole_number(e: ErrorDetails) -> str:
    # Strict fields take a JSON number only: "2" is refused, and pydantic said "Input should be
    # a valid integer" of it as of 2.5, which left a storefront wondering what was wrong with 2.
    quoted = e["type"] == "int_type" and isinstance(e["input"], str)
    said = "must be a whole number" + (", not a string" if quoted else "")
    given = e["input"]
    fen = str(e["loc"][-1] if e["loc"] else "").endswith("_fen")
    # A county's price sheet in yuan (35.50) copied into a seed's unit_price_fen.
    if fen and isinstance(given, float) and math.isfinite(given) and abs(given) < 10**15:
        return f"{said} of fen, 1 CNY = 100 fen ({given:g} CNY is {round(given * 100)} fen?)"
    return said


def _pattern(e: ErrorDetails) -> str:
    pattern = e["ctx"]["pattern"]
    words = PATTERN_WORDS.get(pattern)
    return f"should be {words}" if words else f"must match the pattern {pattern}"


def _characters(e: ErrorDetails) -> str:
    least = e["ctx"]["min_length"]
    return "must not be empty" if least == 1 else f"must be at least {plural(least, 'character')}"


def _existing_time(e: ErrorDetails) -> str:
    # Of a time shaped as RFC 3339 (the envelope's regex: shared.events.envelope) whose numbers
    # name none, such as hour 25, pydantic said "unexpected extra characters at the end".
    return (
        "should be a date and time that exists (a month 01-12, a day of it, hours 00-23,"
        " minutes and seconds 00-59)"
    )


_WORDS: dict[str, Callable[[ErrorDetails], str]] = {
    "missing": lambda e: "must be given",
    "string_type": lambda e: "must be a string",
    "string_unicode": lambda e: "must be Unicode text: it holds a lone surrogate (\\ud800-\\udfff)",
    "string_pattern_mismatch": _pattern,
    "string_too_short": _characters,
    "string_too_long": lambda e: f"must be at most {plural(e['ctx']['max_length'], 'character')}",
    "int_type": _whole_number,
    "int_parsing": _whole_number,
    "int_from_float": _whole_number,
    "greater_than_equal": lambda e: f"must be {e['ctx']['ge']} or more",
    "less_than_equal": lambda e: f"must be {e['ctx']['le']} or less",
    "greater_than": lambda e: f"must be more than {e['ctx']['gt']}",
    "less_than": lambda e: f"must be less than {e['ctx']['lt']}",
    "literal_error": lambda e: f"must be {e['ctx']['expected']}",
    "model_type": lambda e: "must be a JSON object",
    "model_attributes_type": lambda e: "must be a JSON object",
    "dict_type": lambda e: "must be a JSON object",
    "list_type": lambda e: "must be a JSON array",
    "too_short": lambda e: (
        f"must hold at least {plural(e['ctx']['min_length'], 'item')}"
        f" (it holds {e['ctx'].get('actual_length', 'fewer')})"
    ),
    "too_long": lambda e: (
        f"must hold at most {plural(e['ctx']['max_length'], 'item')}"
        f" (it holds {e['ctx'].get('actual_length', 'more')})"
    ),
    "datetime_parsing": _existing_time,
    "datetime_from_date_parsing": _existing_time,
    "date_from_datetime_parsing": lambda e: "should be a date that exists, e.g. 2026-11-30",
    "timezone_aware": lambda e: "must name its time zone (Z or +08:00 at its end)",
}
"""What each pydantic error a storefront, a platform or an operator meets says, by its
``type``, in Caravan's words: "must be given", not "Field required"; "must be 0 or more", not
"Input should be greater than or equal to 0" (a drill's operator met it for a lot of -5 units in
``caravan seed``); "must be at most 64 characters", not "String should have at most 64
characters"; "must be a whole number, not a string", not "Input should be a valid integer" of a
quantity of "2". A bound or a length is the one pydantic's context of the error holds. The words
are no contract (CONTRACT.md promises each error's ``field`` and a ``message``): a type not here
keeps pydantic's message."""


def worded(pattern: str, words: str) -> str:
    """``pattern``, whose mismatch :func:`field_errors` says as "should be ``words``", not
    as pydantic's "String should match pattern '^\\+[1-9][0-9]{6,14}$'": a 422's errors, a
    dead letter's reason and an ``order.rejected``'s errors alike."""
    PATTERN_WORDS[pattern] = words
    return pattern


def field_errors(
    exc: "ValidationError | RequestValidationError", whole: str = "body"
) -> list[dict[str, str]]:
    """Validation errors as ``[{field, message}]``, fields as dotted paths; a document that
    is not JSON is the field ``whole`` (a request's body, a file), with where the parser
    stopped. A validator's message is its own, without pydantic's "Value error, "."""
    found = []
    for e in exc.errors():
        path = _path(e)
        if e["type"] == "json_invalid":
            at = f" at character {path[-1]}" if path else ""  # a body's loc ends with it
            why = e.get("ctx", {}).get("error", "")
            found.append({"field": whole, "message": f"not JSON: {why}{at}"})
        else:
            said = e["msg"].removeprefix(_PYDANTIC_WORDING.get(e["type"], ""))
            if e["type"] in _WORDS:
                said = _WORDS[e["type"]](e)
            if e["type"] == "missing" and path:
                said += _sent_instead(path[-1], e.get("input"))
            found.append({"field": ".".join(path) or whole, "message": said})
    return found


def _path(error: ErrorDetails) -> list[str]:
    return [str(p) for p in error["loc"] if p != "body"]


def unknown_fields(exc: "ValidationError | RequestValidationError") -> list[str]:
    """The fields a body holds that its model does not know (pydantic's ``extra_forbidden``),
    named as :func:`field_errors` names them: told by the error's type, whatever its words."""
    return [".".join(_path(e)) for e in exc.errors() if e["type"] == "extra_forbidden"]


def _sent_instead(name: str, given: Any) -> str:
    """Of a field ``name`` missing from the object ``given``, the name it holds nearest to it,
    if one is near (a storefront's deploy sent ``"qty"`` for ``quantity``: its 200 requests
    were dead-lettered "lines.0.quantity: Field required", the ``qty`` beside it in no reason,
    nor in the ``order.rejected`` its developer reads): ``(qty was sent: a misspelling of
    quantity?)``; nothing where none is near. The name as sent, cut to 64 characters."""
    if not isinstance(given, dict):
        return ""
    sent = [key for key in given if isinstance(key, str) and key != name]
    near = get_close_matches(name, sent, n=1, cutoff=0.5)
    return f" ({near[0][:64]} was sent: a misspelling of {name}?)" if near else ""


_PYDANTIC_ERRORS = set(get_args(ErrorType))


def again(error: ErrorDetails) -> InitErrorDetails:
    """``error`` to raise again (``ValidationError.from_exception_data``) with errors of a
    validator's own, as it was (its type, so its wording, and its context); one of a type of
    our own (``PydanticCustomError``) as it was worded."""
    kind = error["type"]
    if kind not in _PYDANTIC_ERRORS:
        return {
            "type": PydanticCustomError(kind, error["msg"]),
            "loc": error["loc"],
            "input": error["input"],
        }
    return {"type": kind, "loc": error["loc"], "input": error["input"], "ctx": error.get("ctx", {})}
