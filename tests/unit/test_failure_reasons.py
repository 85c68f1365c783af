"""The reason a dead letter records (``dlq.error.message``, shared.db.reason): the error's
kind and message, the SQLSTATE and constraint of a server error, and nothing that quotes a
row's values (asyncpg's DETAIL, SQLAlchemy's statement and parameters, a data exception's
quoted input, the value asyncpg could not encode)."""

import asyncpg
from sqlalchemy import exc as sa_exc

from shared.db import reason

PHONE = "+8613912345678"


def _check_violation() -> asyncpg.PostgresError:
    return asyncpg.CheckViolationError.new(
        {
            "C": "23514",
            "M": 'new row for relation "sms" violates check constraint "sms_to_check"',
            "D": f"Failing row contains (s-1, {PHONE}, Your order is on its way).",
            "n": "sms_to_check",
            "t": "sms",
        }
    )


def test_a_server_error_says_its_sqlstate_and_constraint_not_its_detail() -> None:
    error = _check_violation()
    assert PHONE in str(error)  # asyncpg's own text appends the DETAIL
    assert reason(error) == (
        'CheckViolationError: new row for relation "sms" violates check constraint'
        ' "sms_to_check" (SQLSTATE 23514, constraint sms_to_check, table sms)'
    )


def test_sqlalchemys_error_says_the_server_errors_reason_not_its_statement() -> None:
    error = _check_violation()
    adapted = Exception(f"{type(error)}: {error}")
    adapted.__cause__ = error
    wrapped = sa_exc.IntegrityError("INSERT INTO sms ...", {"to": PHONE}, adapted)
    assert PHONE in str(wrapped)
    assert reason(wrapped) == reason(error)


def test_a_data_exception_does_not_say_the_value_it_quotes() -> None:
    error = asyncpg.InvalidTextRepresentationError.new(
        {"C": "22P02", "M": f'invalid input syntax for type bigint: "{PHONE}"'}
    )
    assert reason(error) == (
        'InvalidTextRepresentationError: invalid input syntax for type bigint: "..."'
        " (SQLSTATE 22P02)"
    )


def test_a_value_asyncpg_cannot_encode_is_named_by_its_argument_not_its_value() -> None:
    error = asyncpg.exceptions._base.DataError(
        f"invalid input for query argument $2: '{PHONE}' (expected an int)"
    )
    error.__cause__ = OverflowError("value out of int64 range")
    assert reason(error) == (
        "DataError: invalid input for query argument $2 (OverflowError('value out of int64 range'))"
    )


def test_any_other_error_says_its_kind_and_first_line() -> None:
    assert reason(KeyError("phone")) == "KeyError: 'phone'"
    assert reason(RuntimeError("no template\nfor en")) == "RuntimeError: no template"
    assert reason(RuntimeError()) == "RuntimeError"
