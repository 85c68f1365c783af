"""Which errors say that PostgreSQL cannot serve a command at all, sorted one way for the
command line (one line, exit 2) and for an action the audit trail must record (refused
before it is made): a database never migrated, or a PostgreSQL that cannot be reached or
refuses the login; and an engine's connection that the server never answers fails within
the connect timeout, as one refused does."""

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from shared.db import Database, is_transient
from shared.db.engine import Unusable, unusable
from shared.settings import Settings
from tests.unit.test_cli_unreachable import silent_port
from tests.unit.test_transient_faults import as_the_dialect_raises

MISSING = asyncpg.UndefinedTableError('relation "auth.audit" does not exist')
REFUSED = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
LOGIN = asyncpg.InvalidPasswordError('password authentication failed for user "caravan"')
NO_DATABASE = asyncpg.InvalidCatalogNameError('database "x" does not exist')
SILENT = ConnectionError("PostgreSQL at 127.0.0.1:1 did not answer within 10 s")
CLOSED = asyncpg.InterfaceError("connection is closed")


@pytest.mark.parametrize(
    ("exc", "kind", "error"),
    [
        (as_the_dialect_raises(MISSING), "not migrated", MISSING),
        (MISSING, "not migrated", MISSING),  # a statement sent on the driver
        (REFUSED, "unreachable", REFUSED),
        (SILENT, "unreachable", SILENT),
        (as_the_dialect_raises(LOGIN), "unreachable", LOGIN),
        (as_the_dialect_raises(NO_DATABASE), "unreachable", NO_DATABASE),
        (as_the_dialect_raises(CLOSED), "unreachable", CLOSED),
    ],
    ids=repr,
)
def test_a_database_never_migrated_or_out_of_reach_is_unusable_and_says_which(
    exc: BaseException, kind: str, error: BaseException
) -> None:
    found = unusable(exc)
    assert found is not None and (found.kind, str(found.error)) == (kind, str(error))


def test_what_is_unusable_is_said_as_the_cli_and_the_audit_trail_said_it() -> None:
    assert str(Unusable("not migrated", MISSING)) == (
        'the database is not migrated (relation "auth.audit" does not exist)'
    )
    assert str(Unusable("unreachable", REFUSED)) == (
        "cannot reach PostgreSQL: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    operational = sa_exc.OperationalError("SELECT ...", {}, REFUSED)
    assert str(unusable(operational)) == str(Unusable("unreachable", REFUSED))


@pytest.mark.parametrize(
    "exc",
    [
        as_the_dialect_raises(
            asyncpg.InterfaceError("the number of query arguments cannot exceed 32767")
        ),
        as_the_dialect_raises(asyncpg.UniqueViolationError("duplicate key value")),
        as_the_dialect_raises(asyncpg.InsufficientPrivilegeError("permission denied")),
        FileNotFoundError(2, "No such file or directory"),  # a seed file, not the database
        ValueError("bad"),
    ],
    ids=repr,
)
def test_an_error_of_the_work_itself_is_not_an_unusable_postgresql(exc: BaseException) -> None:
    assert unusable(exc) is None


async def test_a_connection_never_answered_fails_within_the_timeout_as_transient() -> None:
    """A service's engine waited asyncpg's minute for each connection, then raised a bare
    ``TimeoutError``."""
    with silent_port() as port:
        settings = Settings(
            DATABASE_URL=f"postgresql://u:p@127.0.0.1:{port}/x", db_connect_timeout_seconds=0.5
        )
        db = Database(settings, "orders")
        started = time.monotonic()
        try:
            async with asyncio.timeout(10):
                with pytest.raises(ConnectionError) as raised:
                    async with db.transaction() as conn:
                        await conn.execute(text("select 1"))
        finally:
            await db.dispose()
    assert time.monotonic() - started < 5
    assert str(raised.value) == f"PostgreSQL at 127.0.0.1:{port} did not answer within 0.5 s"
    assert is_transient(raised.value)
    assert unusable(raised.value) == Unusable("unreachable", raised.value)
