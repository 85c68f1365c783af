"""The async engine and session factory of one service, bound to its own schema."""

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import asyncpg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.settings import Settings, asyncpg_url, get_settings


def async_engine(url: str, settings: Settings | None = None, **options: Any) -> AsyncEngine:
    """The one way an engine on PostgreSQL is made: ``url`` in any scheme
    :func:`~shared.settings.asyncpg_url` takes, with SQLAlchemy's ``options``.

    A connection that PostgreSQL does not answer within ``db_connect_timeout_seconds`` (of
    ``settings``, else of the environment) fails with a :class:`ConnectionError` that says
    so, as a refused one does, where asyncpg waited a minute and raised a bare
    ``TimeoutError`` (a hung server, a half-open firewall, a load balancer whose backend is
    gone); a host that cannot be resolved fails with one too. The CLI says either as "cannot
    reach PostgreSQL" (:func:`unusable`), the services take it as transient
    (:func:`is_transient`)."""
    made = create_async_engine(asyncpg_url(url), **options)
    seconds = (settings or get_settings()).db_connect_timeout_seconds
    event.listen(made.sync_engine, "do_connect", _connect_within(seconds))
    return made


class NoAnswer(ConnectionError):
    """A connection PostgreSQL did not answer within ``seconds`` (at ``where``)."""

    def __init__(self, where: str, seconds: float) -> None:
        super().__init__(f"PostgreSQL at {where} did not answer within {seconds:g} s")
        self.seconds = seconds


def _connect_within(seconds: float) -> Callable[..., Any]:
    def connect(dialect: Dialect, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        timeout = cparams.setdefault("timeout", seconds)  # a timeout the URL gives is kept
        where = f"{cparams.get('host') or 'localhost'}:{cparams.get('port') or 5432}"
        try:
            return dialect.connect(*cargs, **cparams)
        except TimeoutError as exc:
            raise NoAnswer(where, float(timeout)) from exc
        except ConnectionError as exc:  # refused, reset: says where already
            connecting(exc, where)
            raise
        except OSError as exc:  # a name that does not resolve: a socket.gaierror
            raise connecting(ConnectionError(f"PostgreSQL at {where}: {exc}"), where) from exc

    return connect


_CONNECTING = "connecting to PostgreSQL"


def connecting(exc: OSError, where: str) -> OSError:
    """``exc``, failed connecting to PostgreSQL at ``where``, so marked (a note, which its
    traceback shows): an OS error says nothing of whose it is (:func:`described`)."""
    exc.add_note(f"{_CONNECTING} at {where}")
    return exc


_OF_POSTGRESQL = (sa_exc.SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, NoAnswer)


def _of_postgresql(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's: SQLAlchemy's or asyncpg's, or (wrapping) an error of
    connecting to it (:func:`connecting`, :class:`NoAnswer`)."""
    return any(
        isinstance(e, _OF_POSTGRESQL)
        or any(str(n).startswith(_CONNECTING) for n in getattr(e, "__notes__", ()))
        for e in _chain(exc)
    )


class Database:
    """A service's handle on PostgreSQL. Creating it connects to nothing."""

    def __init__(self, settings: Settings, schema: str) -> None:
        self.schema = schema
        self.engine: AsyncEngine = async_engine(
            settings.async_database_url(),
            settings,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_pool_size,
            # No ping before each use (a round trip per transaction): a connection that died
            # with the server fails its first statement, SQLAlchemy then discards the pool's
            # older connections, and every caller retries transient faults (consumers and
            # loops with backoff, HTTP with 503 and Retry-After).
            pool_pre_ping=False,
            # A failing statement's error says the statement, not its values ("[parameters:
            # ...]": buyers' addresses, phone numbers, texts), in the tracebacks consumers and
            # HTTP 500s log.
            hide_parameters=True,
            connect_args={"server_settings": {"application_name": f"caravan-{schema}"}},
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction, committed on success."""
        async with self.engine.begin() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


_TRANSIENT_PG = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


# A value PostgreSQL cannot take: refused by the server (SQLSTATE class 22, "data exception":
# text with NUL, a number beyond its column) or by asyncpg while encoding it (an int beyond
# int4 or int8, a date beyond PostgreSQL's). asyncpg's own is an InterfaceError, as a dropped
# connection is, but it never passes by itself.
_BAD_VALUE = (asyncpg.DataError, asyncpg.exceptions._base.DataError)


# Server errors that pass by themselves, by SQLSTATE class or code: a connection lost (08),
# a transaction rolled back for a conflict (40), the server short of disk, memory or
# connections (53), shutting down or restarting (57P01-57P03), an I/O error (58030), a lock
# not granted in time (55P03), and a write refused by a server that became a standby in a
# failover (25006). Not a statement cancelled past its statement_timeout (57014): one that
# always takes too long would stall its partition for good; it is dead-lettered after its
# tries, as a bug is.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53")
_TRANSIENT_SQLSTATES = ("57P01", "57P02", "57P03", "58030", "55P03", "25006")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's error, its adapted DBAPI error, asyncpg's."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return
        yield seen
        orig: BaseException | None = getattr(seen, "orig", None)
        seen = orig or seen.__cause__


def bad_value(exc: BaseException) -> BaseException | None:
    """The error of a value PostgreSQL cannot take, if that is what ``exc`` is (or wraps)."""
    return next((e for e in _chain(exc) if isinstance(e, _BAD_VALUE)), None)


def reason(exc: BaseException) -> str:
    """What went wrong, for a dead letter's ``dlq.error.message``: the error's kind and
    message, and nothing that quotes a row's values (a buyer's phone, address or text).

    A server error says its message, SQLSTATE and constraint, table or column, and not its
    ``DETAIL`` ("Key (phone)=(...) already exists", "Failing row contains (...)"), which
    asyncpg's text appends, nor SQLAlchemy's ``[SQL: ...]`` and ``[parameters: ...]``; a
    data exception (SQLSTATE class 22) quotes the value in its message, which is left out.
    A value asyncpg could not encode says which argument and why, not the value. Anything
    else says its first line."""
    for error in _chain(exc):
        if isinstance(error, asyncpg.PostgresError):
            state = error.sqlstate or "?"
            message = str(error.message or "")
            if state.startswith("22"):
                message = _QUOTED.sub('"..."', message)
            named = [
                f"{what} {name}"
                for what, name in (
                    ("constraint", getattr(error, "constraint_name", None)),
                    ("table", getattr(error, "table_name", None)),
                    ("column", getattr(error, "column_name", None)),
                )
                if name
            ]
            return f"{type(error).__name__}: {message} ({', '.join([f'SQLSTATE {state}', *named])})"
        if isinstance(error, asyncpg.exceptions._base.DataError):
            argument = _ARGUMENT.match(str(error))
            if argument is not None:
                return f"{type(error).__name__}: {argument[0]} ({error.__cause__!r})"
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


_QUOTED = re.compile(r'"[^"]*"')
_ARGUMENT = re.compile(r"invalid input for query argument \$\d+( in element #\d+)?")


def lost_connection(exc: BaseException) -> bool:
    """True if ``exc`` is (or wraps) a connection that failed or was lost, not an error of
    the work on a connection that is fine: asyncpg raises ``InterfaceError`` for both ("the
    number of query arguments cannot exceed 32767" as well as "connection is closed").

    A lost one is what SQLAlchemy's dialect says is (``connection_invalidated``: its
    connection is closed, or its error says "connection is closed"), an OS error of the
    socket, or asyncpg's own error saying so where no SQLAlchemy error wraps it (statements
    sent on the driver, :mod:`shared.db.driver`: "connection is closed", "cannot perform
    operation: connection is closed", "cannot call ...: the underlying connection is
    closed"). A connection the server ended is also PostgreSQL's class 08 ("connection was
    closed in the middle of operation"), which :func:`is_transient` takes by its SQLSTATE."""
    for error in _chain(exc):
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, ConnectionError):
            return True
        if isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error):
            return True
    return False


def storable_text(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a string PostgreSQL's text can hold: no NUL, and UTF-8 (JSON may
    carry a lone surrogate, ``"\\ud800"``, which is not). What an adapter checks an id a
    remote API gave before it is recorded: one that is not would fail the statement."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def missing_relation(exc: BaseException) -> BaseException | None:
    """The error of a table that does not exist, if that is what ``exc`` is (or wraps): in a
    database whose schemas were never migrated."""
    return next((e for e in _chain(exc) if isinstance(e, asyncpg.UndefinedTableError)), None)


# What the server says when it will not take a login at all: the role or its password refused
# (SQLSTATE class 28), no such database (3D000).
_LOGIN_REFUSED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)


@dataclass(frozen=True)
class Unusable:
    """Why PostgreSQL cannot serve a command at all (:func:`unusable`): its tables were never
    made (``"not migrated"``), or it cannot be reached or refuses the login
    (``"unreachable"``), or no database is named at all (``"not named"``: no DATABASE_URL);
    ``error`` is what said so (the driver's error, not SQLAlchemy's wrapper, which adds the
    statement)."""

    kind: Literal["not migrated", "unreachable", "not named"]
    error: BaseException

    def __str__(self) -> str:
        if self.kind == "not migrated":
            return f"the database is not migrated ({self.error})"
        if self.kind == "not named":
            return str(self.error)
        return f"cannot reach PostgreSQL: {self.error}"


def unusable(exc: BaseException) -> Unusable | None:
    """Whether ``exc`` says that PostgreSQL cannot serve a command at all, and which way
    (:class:`Unusable`), or is an error of the work itself (None): what the CLI says in one
    line instead of a traceback, and what keeps an action the audit trail cannot record from
    being made. Not every ``InterfaceError`` is one: asyncpg refuses work it will not send
    too (more parameters than a statement may have)."""
    missing = missing_relation(exc)
    if missing is not None:
        return Unusable("not migrated", missing)
    refused = next((e for e in _chain(exc) if isinstance(e, _LOGIN_REFUSED)), None)
    if refused is not None:
        return Unusable("unreachable", refused)
    if lost_connection(exc) or isinstance(exc, sa_exc.OperationalError):
        return Unusable("unreachable", getattr(exc, "orig", None) or exc)
    return None


# The server is going away or not yet there: shutting down (57P01), crashed (57P02), starting
# up (57P03); with class 08 (a connection failure), the SQLSTATEs of a server not reached.
_GOING_OR_COMING = ("57P01", "57P02", "57P03")


def unreachable(exc: BaseException) -> bool:
    """True if ``exc`` says that PostgreSQL cannot be reached from here at all: a connection
    that could not be made (an OS error, :class:`NoAnswer`), or was lost (:func:`lost_connection`,
    SQLSTATE class 08), a server shutting down or starting up. Not a server that answers
    and refuses the work: no free connection in the pool (SQLAlchemy's ``TimeoutError``), too
    many connections (53300), a conflict (class 40), a lock not granted (55P03), a login
    refused (class 28), though :func:`is_transient` takes most of them and :func:`unusable`
    says "unreachable" of some: meanwhile the server works for others."""
    for error in _chain(exc):
        if isinstance(error, sa_exc.TimeoutError):
            return False
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state.startswith("08") or state in _GOING_OR_COMING
    return lost_connection(exc) or any(isinstance(e, OSError) for e in _chain(exc))


def _transient_sqlstate(exc: BaseException) -> bool:
    for error in _chain(exc):
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str):
            return state[:2] in _TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES
    return False


def is_transient(exc: BaseException) -> bool:
    """True for faults that pass by themselves (database or network down, lock conflicts,
    a server short of disk or memory, a statement past its timeout, a failover).

    Such faults are retried with backoff and never dead-lettered. A value that PostgreSQL
    cannot take (:func:`bad_value`) is not one of them, nor is any other ``InterfaceError``
    but a lost connection (:func:`lost_connection`): asyncpg refusing the work itself (more
    than 32,767 parameters, a feature it lacks, a transaction misused) refuses it again at
    every try, and a consumer retrying it as transient would stall its partition for good.
    Taken as a bug, it is tried a few times and then dead-lettered with its reason.
    """
    if bad_value(exc) is not None:
        return False
    if lost_connection(exc):
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError, *_TRANSIENT_PG)):
        return True
    if _transient_sqlstate(exc):
        return True
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, sa_exc.DBAPIError) and cause is not None:
        orig = getattr(exc, "orig", None)
        inner = getattr(orig, "__cause__", None)
        return isinstance(inner, _TRANSIENT_PG) or isinstance(cause, _TRANSIENT_PG)
    return False


def log_retry(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a background loop's failed round that it will try again (a sweep, a dispatcher,
    the relay, retention): a transient fault, such as the database restarting, as a
    one-line warning, since it passes by itself; anything else as an error with its
    traceback, since it will not."""
    if is_transient(exc):
        logger.warning("%s; transient fault, retrying: %s", what, described(exc))
    else:
        logger.error("%s", what, exc_info=exc)


__all__ = [
    "AsyncSession",
    "Database",
    "NoAnswer",
    "Unusable",
    "async_engine",
    "bad_value",
    "connecting",
    "is_transient",
    "log_retry",
    "lost_connection",
    "missing_relation",
    "reason",
    "unreachable",
    "unusable",
]


def address(engine: AsyncEngine) -> str:
    """Where ``engine`` connects, as an operator would look for it: the Unix socket
    (``?host=/dir``: ``/dir/.s.PGSQL.<port>``, the local cluster's) or ``host:port``."""
    parsed = engine.url
    host = parsed.query.get("host") or parsed.host or "localhost"
    if isinstance(host, tuple):  # ?host=a&host=b: several tried in turn
        host = ",".join(host)
    port = parsed.port or 5432
    return f"{host.rstrip('/')}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


# The server turned the connection away: starting up or shutting down (57P03), out of
# connections (53300), the role or its password refused (class 28), no such database (3D000).
_TURNED_AWAY = ("57P03", "53300", "3D000")
# The server ended a connection it had: shut down (57P01-57P02), or a connection failure
# (class 08: "connection was closed in the middle of operation").
_ENDED = ("57P01", "57P02")


def described(exc: BaseException, where: str | None = None, *, public: bool = False) -> str:
    """What went wrong with PostgreSQL (at ``where``, :func:`address`), in words an
    operator can act on: what a retried fault's warning logs and ``/healthz`` says, where
    they said the exception's class (``FileNotFoundError``: the local cluster's socket gone).
    ``public``, for anyone who asks (``/healthz`` takes no token): neither where nor the
    server's own words (a login refused names the role), which the logs keep.

    ``cannot reach PostgreSQL at /x/.s.PGSQL.15432 (No such file or directory)`` (stopped,
    its socket gone; ``Connection refused`` on TCP; a name not resolved), ``PostgreSQL at
    ... refused the connection: the database system is starting up`` (or out of
    connections, a login refused), ``PostgreSQL at ... ended the connection: terminating
    connection due to administrator command``, ``lost the connection to PostgreSQL at ...``,
    ``no free connection to PostgreSQL at ... within the pool's timeout``; anything else its
    :func:`reason` (never a row's values). An error that is not PostgreSQL's
    (:func:`_of_postgresql`: an OS error of something else the work used) is said as it is,
    not named PostgreSQL's."""
    at = f" at {where}" if where and not public else ""
    if not _of_postgresql(exc):
        return (_os_reason(exc) or type(exc).__name__) if public else reason(exc)
    for error in _chain(exc):
        if isinstance(error, sa_exc.TimeoutError):  # the pool's: every connection in use
            return f"no free connection to PostgreSQL{at} within the pool's timeout"
        if isinstance(error, asyncpg.PostgresError):
            state = error.sqlstate or ""
            words = "" if public else f": {error.message or error}"
            if state in _TURNED_AWAY or state.startswith("28"):
                return f"PostgreSQL{at} refused the connection{words}"
            if state in _ENDED or state.startswith("08"):
                return f"PostgreSQL{at} ended the connection{words}"
            if public:
                return f"PostgreSQL failed the statement (SQLSTATE {state or '?'})"
            return f"PostgreSQL{at}: {reason(error)}"
        if isinstance(error, TimeoutError) and not error.args:
            return f"cannot reach PostgreSQL{at} (no answer in time)"
        if isinstance(error, NoAnswer):  # async_engine's: it says where itself
            return f"cannot reach PostgreSQL{at} (no answer within {error.seconds:g} s)"
        if isinstance(error, OSError):
            why = _os_reason(error) or (None if public else error)
            return f"cannot reach PostgreSQL{at}" + (f" ({why})" if why else "")
    if lost_connection(exc):
        return f"lost the connection to PostgreSQL{at}"
    return (
        f"PostgreSQL failed ({type(exc).__name__})" if public else f"PostgreSQL{at}: {reason(exc)}"
    )


def _os_reason(exc: BaseException) -> str | None:
    """The OS's words for an OS error ``exc`` is or wraps: by its errno, its own or one it
    wraps, else the wrapped error's own words (a name not resolved: a socket.gaierror's)."""
    oses = [e for e in _chain(exc) if isinstance(e, OSError)]
    numbers = [e.errno for e in oses if e.errno]
    if numbers and numbers[0] > 0:
        return os.strerror(numbers[0])
    return next((e.strerror for e in oses if e.strerror), None)
