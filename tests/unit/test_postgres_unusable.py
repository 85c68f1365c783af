"""Which errors say that PostgreSQL cannot serve a command at all, sorted one way for the
command line (one line, exit 2) and for an action the audit trail must record (refused
before it is made): a database never migrated, a PostgreSQL that cannot be reached, refuses
the login or has no connection to spare (Kind.unusable); and an engine's connection that
the server never answers fails within the connect timeout, as one refused does."""

import asyncio

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from caravan.ops.record import refusal
from shared.db import Database, fault
from shared.db.engine import Fault, Kind
from shared.settings import Settings
from tests.unit.test_cli_unreachable import silent_port
from tests.unit.test_transient_faults import as_the_dialect_raises

MISSING = asyncpg.UndefinedTableError('relation "auth.audit" does not exist')
REFUSED = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
LOGIN = asyncpg.InvalidPasswordError('password authentication failed for user "caravan"')
NO_DATABASE = asyncpg.InvalidCatalogNameError('database "x" does not exist')
SILENT = ConnectionError("PostgreSQL at 127.0.0.1:1 did not answer within 10 s")
CLOSED = asyncpg.InterfaceError("connection is closed")
TOO_MANY = asyncpg.TooManyConnectionsError("sorry, too many clients already")
STARTING = asyncpg.CannotConnectNowError("the database system is starting up")
ENDED = asyncpg.AdminShutdownError("terminating connection due to administrator command")


@pytest.mark.parametrize(
    ("exc", "kind", "error"),
    [
        (as_the_dialect_raises(MISSING), Kind.NOT_MIGRATED, MISSING),
        (MISSING, Kind.NOT_MIGRATED, MISSING),  # a statement sent on the driver
        (REFUSED, Kind.CONNECTION_FAILED, REFUSED),
        (SILENT, Kind.CONNECTION_FAILED, SILENT),
        (as_the_dialect_raises(LOGIN), Kind.LOGIN_REFUSED, LOGIN),
        (as_the_dialect_raises(NO_DATABASE), Kind.LOGIN_REFUSED, NO_DATABASE),
        (as_the_dialect_raises(CLOSED), Kind.CONNECTION_LOST, CLOSED),
        (as_the_dialect_raises(TOO_MANY), Kind.TOO_MANY_CONNECTIONS, TOO_MANY),
        (as_the_dialect_raises(STARTING), Kind.NOT_READY, STARTING),
        (as_the_dialect_raises(ENDED), Kind.CONNECTION_LOST, ENDED),
    ],
    ids=repr,
)
def test_a_database_never_migrated_or_out_of_reach_is_unusable_and_says_which(
    exc: BaseException, kind: Kind, error: BaseException
) -> None:
    found = fault(exc)
    assert found.kind.unusable and (found.kind, str(found.error)) == (kind, str(error))


def test_what_is_unusable_is_said_as_the_cli_and_the_audit_trail_said_it() -> None:
    assert str(Fault(Kind.NOT_MIGRATED, MISSING)) == (
        'the database is not migrated (relation "auth.audit" does not exist)'
    )
    assert str(Fault(Kind.NOT_REACHED, REFUSED)) == (
        "cannot reach PostgreSQL: [Errno 111] Connect call failed ('127.0.0.1', 1)"
    )
    operational = sa_exc.OperationalError("SELECT ...", {}, REFUSED)
    assert str(fault(operational)) == str(Fault(Kind.NOT_REACHED, REFUSED))
    assert str(Fault(Kind.LOGIN_REFUSED, LOGIN)) == (
        'PostgreSQL refused the login: password authentication failed for user "caravan"'
    )
    assert str(Fault(Kind.TOO_MANY_CONNECTIONS, TOO_MANY)) == (
        "PostgreSQL refused the connection, too many connections: sorry, too many clients already"
    )


def test_a_refusal_for_a_login_postgresql_refuses_says_where_the_login_is_set() -> None:
    """It said "run it once PostgreSQL is back" of a PostgreSQL that was up and refused a
    wrong password: no waiting lifts that."""
    said = refusal("replay", Fault(Kind.LOGIN_REFUSED, LOGIN))
    assert said == (
        "the audit trail cannot record it (PostgreSQL refused the login: password"
        ' authentication failed for user "caravan"): a replay is not made unrecorded; check'
        " the role, its password and the database in DATABASE_URL (or in the file"
        " DATABASE_URL_FILE names) (--dry-run needs only Kafka)"
    )


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
    assert not fault(exc).kind.unusable


async def test_a_connection_never_answered_fails_within_the_timeout_as_transient() -> None:
    """A service's engine waited asyncpg's minute for each connection, then raised a bare
    ``TimeoutError``. (Its wait is the setting's, as the error says: asyncpg's minute would
    run past the test's bound, which is that long only so that a loaded machine never
    fails it.)"""
    with silent_port() as port:
        settings = Settings(
            DATABASE_URL=f"postgresql://u:p@127.0.0.1:{port}/x", db_connect_timeout_seconds=0.5
        )
        db = Database(settings, "orders")
        try:
            async with asyncio.timeout(30):
                with pytest.raises(ConnectionError) as raised:
                    async with db.transaction() as conn:
                        await conn.execute(text("select 1"))
        finally:
            await db.dispose()
    assert str(raised.value) == f"PostgreSQL at 127.0.0.1:{port} did not answer within 0.5 s"
    assert fault(raised.value) == Fault(Kind.NOT_REACHED, raised.value)
    assert fault(raised.value).kind.transient


def test_a_refusal_for_too_many_connections_says_what_the_cli_says() -> None:
    """It said "run it once PostgreSQL is back" of a server that was up with no connection
    to spare, where the CLI says to try once some are closed (R6's review)."""
    said = refusal("redrive", Fault(Kind.TOO_MANY_CONNECTIONS, TOO_MANY))
    assert said.endswith(
        "a redrive is not made unrecorded; its max_connections are all in use: try again once"
        " some are closed (--dry-run needs only Kafka)"
    ), said
