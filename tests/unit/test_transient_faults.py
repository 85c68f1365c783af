"""Which faults are retried (transient) and which are not: a database that is shutting down
or restarting is transient; a bug is not (and deciding must never raise). Background loops
log the first kind as a warning and the second as an error with its traceback."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
    PGDialect_asyncpg,
)
from sqlalchemy.ext.asyncio import create_async_engine

from services.inventory.entrypoints.subscribers import hold_expiry_loop
from services.orders.entrypoints.subscribers import expiry_loop
from services.payments.entrypoints.loops import reminder_loop
from shared.db import fault, log_retry
from shared.db.engine import (
    AWAY,
    SOCKET_GONE,
    Fault,
    Kind,
    NoAnswer,
    address,
    async_engine,
    at_commit,
    connecting,
    described,
    retried_fault,
)
from shared.events.envelope import new_event
from shared.events.inventory import StockSold
from shared.events.registry import Parsed
from shared.messaging.consumer import Consumer, Subscription
from shared.settings import Settings
from shared.topics import EventType, Topic


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
    ],
)
def test_database_and_network_faults_are_transient(exc: BaseException) -> None:
    assert fault(exc).kind.transient


def _as_sqlalchemy_raises(error: BaseException) -> BaseException:
    """``error`` as SQLAlchemy raises it: a DBAPIError over its dialect's adapted error."""
    adapted = Exception("the dialect's adapted error")
    adapted.__cause__ = error
    return sa_exc.DBAPIError("UPDATE lots ...", {}, adapted)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.DiskFullError("could not extend file: No space left on device"),
        asyncpg.OutOfMemoryError("out of memory"),
        asyncpg.ReadOnlySQLTransactionError("cannot execute UPDATE in a read-only transaction"),
        asyncpg.LockNotAvailableError("canceling statement due to lock timeout"),
        asyncpg.PostgresIOError("could not read block"),
    ],
)
def test_a_server_short_of_resources_a_timeout_or_a_failover_is_transient(
    error: BaseException,
) -> None:
    """These were taken for bugs: the record in hand was dead-lettered after three quick
    tries (``handler_error``), a disk filling up dead-lettered whatever came meanwhile. (A
    statement past its statement_timeout is not among them: always too slow, it would stall
    its partition for good.)"""
    assert fault(error).kind.transient
    assert fault(_as_sqlalchemy_raises(error)).kind.transient


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        KeyError("x"),
        TypeError("bug"),
        _as_sqlalchemy_raises(asyncpg.UniqueViolationError("duplicate key value")),
        _as_sqlalchemy_raises(asyncpg.UndefinedColumnError('column "x" does not exist')),
        _as_sqlalchemy_raises(asyncpg.QueryCanceledError("canceling statement due to timeout")),
    ],
)
def test_bugs_are_not_transient(exc: BaseException) -> None:
    assert not fault(exc).kind.transient


def test_only_a_key_taken_at_commit_is_a_race_lost_and_still_a_failed_try() -> None:
    """A unique violation met writing the rows held for the commit (``Tx.flush`` marks it) is
    a race lost to another transaction: a consumer says it as a warning, and still counts
    the try (not transient: a key taken at every try is a bug, dead-lettered). One met by a
    statement of the handler's own, or another constraint at commit, is what it was."""
    taken = 'duplicate key value violates unique constraint "payments_pkey"'
    raced = at_commit(asyncpg.UniqueViolationError(taken))
    assert fault(raced).kind is Kind.RACE_LOST
    assert not fault(raced).kind.transient
    assert fault(asyncpg.UniqueViolationError(taken)).kind is Kind.FAILED
    refused = at_commit(asyncpg.CheckViolationError('violates check constraint "x"'))
    assert fault(refused).kind is Kind.FAILED


def _raised_from(error: Exception, cause: BaseException) -> Exception:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    "exc",
    [
        _raised_from(ValueError("no such zone"), socket.gaierror(-2, "Name or service not known")),
        _raised_from(KeyError("config"), PermissionError(13, "Permission denied")),
    ],
)
def test_a_handlers_own_error_caused_by_an_os_error_is_not_transient(exc: Exception) -> None:
    """An OS error anywhere below a handler's own error made it transient: retried for ever,
    its partition stalled, where it was dead-lettered after its tries (a review of the one
    classification)."""
    assert fault(exc).kind is Kind.OTHER


def test_a_value_postgresql_cannot_take_is_not_transient() -> None:
    """asyncpg refuses an int beyond its column as an InterfaceError (as it does a dropped
    connection), which SQLAlchemy wraps as one too: retried, it would stall a partition for
    good, and an API would answer 503 "retry" for what no retry mends."""
    client = asyncpg.exceptions._base.DataError(
        "invalid input for query argument $1: 3000000000 (value out of int32 range)"
    )
    adapted = Exception("the dialect's adapted error")
    adapted.__cause__ = client
    wrapped = sa_exc.InterfaceError("INSERT INTO lots ...", {}, adapted)
    server = asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8"')
    for exc, cause in ((wrapped, client), (server, server)):
        assert not fault(exc).kind.transient
        assert fault(exc) == Fault(Kind.BAD_VALUE, cause)
    assert fault(asyncpg.AdminShutdownError("terminating")).kind is not Kind.BAD_VALUE
    assert fault(
        as_the_dialect_raises(asyncpg.InterfaceError("connection is closed"))
    ).kind.transient


_DBAPI = AsyncAdapt_asyncpg_dbapi(asyncpg)  # type: ignore[no-untyped-call]
_DIALECT = PGDialect_asyncpg(dbapi=_DBAPI)  # type: ignore[no-untyped-call]


def as_the_dialect_raises(error: Exception) -> sa_exc.DBAPIError:
    """asyncpg's ``error`` as SQLAlchemy's asyncpg dialect raises it from a statement: its
    adapted DBAPI error (of asyncpg's class), wrapped in SQLAlchemy's, invalidating the
    connection as the dialect decides (``is_disconnect``)."""
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(_DBAPI, error)
    except Exception as adapted:
        lost = _DIALECT.is_disconnect(adapted, None, None)  # type: ignore[no-untyped-call]
        wrapped = sa_exc.DBAPIError.instance(
            "SELECT ...", {}, adapted, _DBAPI.Error, connection_invalidated=lost, dialect=_DIALECT
        )
        assert isinstance(wrapped, sa_exc.DBAPIError)
        return wrapped
    raise AssertionError("the dialect raised nothing")


# What asyncpg raises itself (not PostgreSQL) for work it will not do: each is raised again
# at every try of the same work.
_REFUSED_WORK = [
    asyncpg.InterfaceError("the number of query arguments cannot exceed 32767"),
    asyncpg.InterfaceError("cannot use Connection.transaction() in a manually started transaction"),
    asyncpg.exceptions.UnsupportedServerFeatureError("TLS is not supported by the server"),
    asyncpg.exceptions.ClientConfigurationError("invalid connection parameter"),
]
# A connection gone: asyncpg's words for it (its connection, its protocol, a prepared
# statement or cursor of it), and PostgreSQL's class 08 for one ended mid-statement.
_LOST = [
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    asyncpg.InterfaceError(
        "cannot call PreparedStatement.fetch(): the underlying connection is closed"
    ),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
]


@pytest.mark.parametrize("error", _REFUSED_WORK, ids=str)
def test_asyncpg_refusing_the_work_itself_is_not_transient(error: Exception) -> None:
    """asyncpg raises ``InterfaceError`` for a connection gone and for work it will not
    send alike; all were retried as transient, so a consumer retried a record whose handler
    sends more than 32,767 parameters for ever and its partition stalled, where it is to be
    dead-lettered with its reason after its tries (and an API answered 503 "retry")."""
    for exc in (error, as_the_dialect_raises(error)):
        assert not fault(exc).kind.transient, repr(exc)
        assert not fault(exc).kind.lost, repr(exc)


@pytest.mark.parametrize("error", _LOST, ids=str)
def test_a_lost_connection_stays_transient(error: Exception) -> None:
    """Raised by asyncpg itself (a statement sent on the driver, shared/db/driver.py) or
    wrapped by SQLAlchemy's dialect, as each caller meets it."""
    for exc in (error, as_the_dialect_raises(error)):
        assert fault(exc).kind.transient, repr(exc)
        if isinstance(error, asyncpg.InterfaceError):
            assert fault(exc).kind.lost, repr(exc)


def test_a_transaction_ended_for_sitting_idle_is_a_connection_lost() -> None:
    """PostgreSQL ends the session of a transaction idle past its
    ``idle_in_transaction_session_timeout`` (a process frozen mid-transaction, then thawed):
    FATAL 25P03. asyncpg mostly finds the connection closed by then; a statement sent as the
    server ends it is answered with the error itself, which was a bug's (a handler's error
    with its traceback, the record dead-lettered after its tries), where it is a connection
    lost, retried."""
    error = asyncpg.IdleInTransactionSessionTimeoutError(
        "terminating connection due to idle-in-transaction timeout"
    )
    for exc in (error, as_the_dialect_raises(error)):
        assert fault(exc).kind is Kind.CONNECTION_LOST, repr(exc)
        assert described(exc) == (
            "PostgreSQL ended the connection:"
            " terminating connection due to idle-in-transaction timeout"
        )


def test_a_loop_logs_a_transient_fault_as_a_warning_and_a_bug_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.loop")
    with caplog.at_level(logging.INFO, logger="tests.loop"):
        refused = connecting(ConnectionRefusedError(111, "Connect call failed"), "127.0.0.1:1")
        log_retry(log, "sweep failed", refused)
        try:
            raise ValueError("bad")
        except ValueError as exc:
            log_retry(log, "sweep failed", exc)
    transient, bug = caplog.records
    assert (transient.levelno, transient.exc_info) == (logging.WARNING, None)
    said = "sweep failed; transient fault, retrying: cannot reach PostgreSQL (Connection refused)"
    assert transient.getMessage() == said
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
    assert bug.exc_info[0] is ValueError


def test_postgresql_away_is_one_retried_fault_whatever_its_words() -> None:
    """A stop ends the connections, then refuses them, then turns them away while starting
    up: one fault, said once a minute at most (shared.logs.Faults), where each of its three
    words was a fault of its own. Another transient fault is its words; a bug is none."""
    away = [
        connecting(ConnectionRefusedError(111, "Connect call failed"), "127.0.0.1:1"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    ]
    assert [retried_fault(exc) for exc in away] == [{"fault": AWAY}] * 3
    crowded = asyncpg.TooManyConnectionsError("sorry, too many clients already")
    said = "PostgreSQL refused the connection: sorry, too many clients already"
    assert retried_fault(crowded) == {"fault": said}
    assert retried_fault(ValueError("a bug")) == {}


def _socket_gone_said_with_where() -> ConnectionError:
    """A connect error that names where and wraps the OS's own (its errno is what is said)."""
    said = ConnectionError(
        "PostgreSQL at /srv/pg/socket:15432: [Errno 2] No such file or directory"
    )
    said.__cause__ = FileNotFoundError(2, "No such file or directory")
    return said


def _connect(error: OSError) -> OSError:
    """``error`` as it leaves async_engine's connect: marked as connecting to PostgreSQL."""
    return connecting(error, "/srv/pg/socket/.s.PGSQL.15432")


def _wrapping(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "said"),
    [
        # The local cluster stopped: its Unix socket gone (the walkthrough's
        # "FileNotFoundError(2, 'No such file or directory')", nothing naming PostgreSQL).
        (
            _connect(FileNotFoundError(2, "No such file or directory")),
            "cannot reach PostgreSQL at {w} (its socket is gone: the PostgreSQL server is not"
            " running)",
        ),
        (
            _connect(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")),
            "{c} (Connection refused)",
        ),
        (
            _connect(OSError("Multiple exceptions: [Errno 111] ...")),
            "{c} (Multiple exceptions: [Errno 111] ...)",
        ),
        (_connect(_socket_gone_said_with_where()), "{c} ({s})"),
        (_connect(TimeoutError()), "{c} (no answer in time)"),
        # async_engine's own, which say where themselves: not said twice.
        (_wrapping(NoAnswer("127.0.0.1:1", 10), TimeoutError()), "{c} (no answer within 10 s)"),
        (
            _wrapping(
                ConnectionError(
                    "PostgreSQL at db.invalid:5432: [Errno -2] Name or service not known"
                ),
                _connect(socket.gaierror(-2, "Name or service not known")),
            ),
            "{c} (Name or service not known)",
        ),
        (
            asyncpg.CannotConnectNowError("the database system is starting up"),
            "PostgreSQL at {w} refused the connection: the database system is starting up",
        ),
        (
            asyncpg.TooManyConnectionsError("sorry, too many clients already"),
            "PostgreSQL at {w} refused the connection: sorry, too many clients already",
        ),
        (
            asyncpg.AdminShutdownError("terminating connection due to administrator command"),
            "PostgreSQL at {w} ended the connection: terminating connection due to"
            " administrator command",
        ),
        (
            asyncpg.InterfaceError("connection is closed"),
            "lost the connection to PostgreSQL at {w}",
        ),
        (
            sa_exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"),
            "no free connection to PostgreSQL at {w} within the pool's timeout",
        ),
    ],
)
def test_a_database_fault_is_said_naming_postgresql_where_and_why(
    error: BaseException, said: str
) -> None:
    """What /healthz says of PostgreSQL and what a retried fault's warning logs: the
    walkthrough saw ``"database": "FileNotFoundError"`` and ``transient fault, retrying:
    FileNotFoundError(2, 'No such file or directory')``, nothing naming PostgreSQL."""
    where = "/srv/pg/socket/.s.PGSQL.15432"
    expected = said.format(w=where, s=SOCKET_GONE, c=f"cannot reach PostgreSQL at {where}")
    assert described(error, where) == expected
    assert described(_as_sqlalchemy_raises(error), where) == expected


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "Connection refused"),
        (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
        (TimeoutError(), "TimeoutError"),
    ],
)
def test_an_error_not_postgresqls_is_not_said_to_be(error: OSError, said: str) -> None:
    """A handler's fault of something else it used (a file, another server) was said as
    "cannot reach PostgreSQL at ..." for any OSError: the 503 handler's and the consumer's
    warnings sent the operator to a database that was fine."""
    where = "/srv/pg/socket/.s.PGSQL.15432"
    assert described(error, where) == f"{type(error).__name__}: {error!s}".rstrip(": ")
    assert described(error, public=True) == said


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            _connect(FileNotFoundError(2, "No such file or directory")),
            "cannot reach PostgreSQL (its socket is gone: the PostgreSQL server is not running)",
        ),
        (
            asyncpg.InvalidPasswordError('password authentication failed for user "caravan"'),
            "PostgreSQL refused the connection",
        ),
        (
            asyncpg.AdminShutdownError("terminating connection due to administrator command"),
            "PostgreSQL ended the connection",
        ),
        (
            asyncpg.UndefinedTableError('relation "orders.x" does not exist'),
            "PostgreSQL failed the statement (SQLSTATE 42P01)",
        ),
        (NoAnswer("db.example:5432", 10), "cannot reach PostgreSQL (no answer within 10 s)"),
    ],
)
def test_what_anyone_is_told_names_neither_where_nor_the_servers_words(
    error: BaseException, said: str
) -> None:
    """/healthz (no token) said the server's address and, for a login refused, its message
    (the role's name) to anyone."""
    where = "db.example:5432"
    assert described(error, where, public=True) == said
    assert described(_as_sqlalchemy_raises(error), where, public=True) == said
    assert where in described(error, where)


async def test_a_connection_async_engine_could_not_make_is_said_as_postgresqls() -> None:
    engine = async_engine("postgresql+asyncpg://caravan:x@127.0.0.1:1/caravan")
    with pytest.raises(OSError) as refused:
        async with engine.connect():
            pass
    assert described(refused.value) == "cannot reach PostgreSQL (Connection refused)"
    await engine.dispose()


def test_where_postgresql_is_said_is_its_socket_or_its_host_and_port() -> None:
    local = "postgresql+asyncpg://caravan:x@:15432/caravan?host=/srv/pg/socket"
    assert address(create_async_engine(local)) == "/srv/pg/socket/.s.PGSQL.15432"
    remote = "postgresql+asyncpg://caravan:x@db.example/caravan"
    assert address(create_async_engine(remote)) == "db.example:5432"


class _DatabaseGone:
    """A unit of work whose every transaction fails as a restarting database's does."""

    def __init__(self) -> None:
        self.calls = 0
        self.third = asyncio.Event()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        self.calls += 1
        if self.calls == 3:
            self.third.set()
        raise asyncpg.CannotConnectNowError("the database system is starting up")
        yield


@pytest.mark.parametrize(
    ("loop", "logger"),
    [
        (lambda uow: hold_expiry_loop(uow, timedelta(minutes=30), 0.01), "services.inventory"),
        (lambda uow: expiry_loop(uow, 0.01), "services.orders"),
        (
            lambda uow: reminder_loop(uow, Settings(payments_reminder_interval_seconds=0.01)),
            "services.payments",
        ),
    ],
    ids=["inventory holds", "orders expiry", "payments reminders"],
)
async def test_a_sweep_waits_out_a_restarting_database_with_warnings_not_errors(
    loop: Callable[[Any], Coroutine[Any, Any, None]],
    logger: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    uow = _DatabaseGone()
    with caplog.at_level(logging.INFO, logger=logger):
        task = asyncio.create_task(loop(uow))
        await asyncio.wait_for(uow.third.wait(), 5)  # it keeps trying
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    levels = {r.levelname for r in caplog.records}
    assert levels == {"WARNING"}, [(r.levelname, r.getMessage()) for r in caplog.records]


class _Restarting:
    """A unit of work on the local cluster whose first transaction fails as a stopped
    PostgreSQL's does (its Unix socket gone), and the next one works."""

    def __init__(self) -> None:
        url = "postgresql+asyncpg://caravan:x@:15432/caravan?host=/srv/pg/socket"
        self.db = SimpleNamespace(engine=create_async_engine(url))
        self.failed = False

    @contextlib.asynccontextmanager
    async def begin(self, cause: Any = None) -> AsyncIterator["_Restarting"]:
        if not self.failed:
            self.failed = True
            raise connecting(FileNotFoundError(2, "No such file or directory"), "/srv/pg/socket")
        yield self

    async def claim(self, key: str, topic: str) -> bool:
        return True


async def test_a_consumer_retrying_a_transient_fault_says_what_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It logged "transient fault, retrying: FileNotFoundError(2, 'No such file or
    directory')" for a stopped local PostgreSQL, naming neither PostgreSQL nor where."""
    handled: list[str] = []

    async def handle(tx: Any, parsed: Parsed) -> None:
        handled.append(parsed.envelope.id)

    consumer = Consumer("t-said", "caravan-t-said", _Restarting(), 3, 10, 1, 1, 1)  # type: ignore[arg-type]
    consumer.register(Subscription(Topic.INVENTORY_EVENTS, {EventType.STOCK_SOLD: handle}))
    value = new_event(StockSold(order_id="o-1"), source="caravan/inventory").to_json()
    topic = Topic.INVENTORY_EVENTS.value
    with caplog.at_level(logging.WARNING, logger="shared.messaging.consumer"):
        await consumer.dispatch(ConsumerRecord(topic, 0, 1, 0, 0, b"k", value, None, 1, 1, []))
    assert len(handled) == 1
    said = [r.getMessage() for r in caplog.records if "transient" in r.getMessage()]
    assert said == [
        "transient fault, retrying: cannot reach PostgreSQL at /srv/pg/socket/.s.PGSQL.15432"
        f" ({SOCKET_GONE})"
    ]


async def test_a_statement_asyncpg_gave_up_waiting_for_is_a_connection_lost() -> None:
    """asyncpg's own timeout (``command_timeout``, shared.db.engine.Database: a server that
    takes the bytes and never answers) raises a bare ``TimeoutError`` in asyncpg's code: a
    connection lost, PostgreSQL away, where it was an OS error said as ``TimeoutError``; a
    timeout raised in the work's own code stays the work's."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # takes what is sent, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with server:
            with pytest.raises(TimeoutError) as raised:
                await asyncpg.connect(host="127.0.0.1", port=port, timeout=0.2)
    finally:
        server.close()
    assert fault(raised.value).kind is Kind.CONNECTION_LOST
    assert described(raised.value) == "lost the connection to PostgreSQL (no answer in time)"
    try:
        async with asyncio.timeout(0):
            await asyncio.sleep(1)
    except TimeoutError as own:
        assert fault(own).kind is Kind.OS_ERROR
