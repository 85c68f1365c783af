"""What Caravan's HTTP APIs and their clients (the ``caravan`` command, the operations page,
the tests) share, without the servers' imports (FastAPI, SQLAlchemy: a command must not pay
for them): the headers a call carries its token in, and validation errors said field by
field."""

from typing import TYPE_CHECKING, get_args

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


_BOUND_WORDS = {
    "greater_than_equal": "must be {ge} or more",
    "less_than_equal": "must be {le} or less",
    "greater_than": "must be more than {gt}",
    "less_than": "must be less than {lt}",
}
"""A number past a bound, said by :func:`field_errors` in our words with the bound (pydantic's
context of the error holds it): "must be 0 or more", not "Input should be greater than or equal
to 0" (a drill's operator met it for a lot of -5 units in ``caravan seed``)."""


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
        path = [str(p) for p in e["loc"] if p != "body"]
        if e["type"] == "json_invalid":
            at = f" at character {path[-1]}" if path else ""  # a body's loc ends with it
            why = e.get("ctx", {}).get("error", "")
            found.append({"field": whole, "message": f"not JSON: {why}{at}"})
        else:
            said = e["msg"].removeprefix(_PYDANTIC_WORDING.get(e["type"], ""))
            if e["type"] == "string_pattern_mismatch" and e["ctx"]["pattern"] in PATTERN_WORDS:
                said = f"should be {PATTERN_WORDS[e['ctx']['pattern']]}"
            elif e["type"] in _BOUND_WORDS:
                said = _BOUND_WORDS[e["type"]].format(**e.get("ctx", {}))
            found.append({"field": ".".join(path) or whole, "message": said})
    return found


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
