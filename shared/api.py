"""What Caravan's HTTP APIs and their clients (the ``caravan`` command, the operations page,
the tests) share, without the servers' imports (FastAPI, SQLAlchemy: a command must not pay
for them): the headers a call carries its token in, and validation errors said field by
field."""

from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from fastapi.exceptions import RequestValidationError


def bearer_headers(token: str | None) -> dict[str, str]:
    """The headers a client calls a Caravan API with (none without a token)."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


_PYDANTIC_WORDING = {"value_error": "Value error, ", "assertion_error": "Assertion failed, "}
"""What pydantic puts before the message of a validator's ``ValueError`` (or failed
``assert``): its wording, not ours, kept out of what users read."""


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
            found.append({"field": ".".join(path) or whole, "message": said})
    return found
