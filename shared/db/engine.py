"""The async engine and session factory of one service, bound to its own schema."""

import asyncio
import errno
import logging
import os
import re
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeGuard

import asyncpg
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import QueuePool

from shared.logs import FAULTS, answers_again, retried
from shared.settings import Settings, asyncpg_url, get_settings

log = logging.getLogger(__name__)


def async_engine(url: str, settings: Settings | None = None, **options: Any) -> AsyncEngine:
    """The one way an engine on PostgreSQL is made: ``url`` in any scheme
    :func:`~shared.settings.asyncpg_url` takes, with SQLAlchemy's ``options``.

    A connection that PostgreSQL does not answer within ``db_connect_timeout_seconds`` (of
    ``settings``, else of the environment) fails with a :class:`ConnectionError` that says
    so, as a refused one does, where asyncpg waited a minute and raised a bare
    ``TimeoutError`` (a hung server, a half-open firewall, a load balancer whose backend is
    gone); a host that cannot be resolved fails with one too. Each is marked as PostgreSQL's
    (:func:`connecting`): :func:`fault` sorts it as :attr:`Kind.NOT_REACHED`, which the CLI
    says as "cannot reach PostgreSQL" and the services take as transient.

    A connection made ends PostgreSQL's being away (:data:`AWAY`), which is then said in
    one line, with how long it lasted: its warnings were said once a minute at most."""
    made = create_async_engine(asyncpg_url(url), **options)
    seconds = (settings or get_settings()).db_connect_timeout_seconds
    event.listen(made.sync_engine, "do_connect", _connect_within(seconds))
    event.listen(made.sync_engine, "connect", _answers(made))
    event.listen(made.sync_engine, "checkin", _closed_if_inside_a_transaction)
    event.listen(made.sync_engine, "checkout", _refused_if_inside_a_transaction)
    return made


LEFT_INSIDE = "a connection to PostgreSQL returned to the pool inside a transaction"
"""What is said (a warning, once, then at most once a minute: :class:`shared.logs.Faults`)
when a connection is closed for it (:func:`_closed_if_inside_a_transaction`)."""


def inside_a_transaction(raw: asyncpg.Connection) -> bool:
    """Whether the driver's connection ``raw`` is inside a transaction: the server's (a
    ``BEGIN`` that no ``COMMIT`` or ``ROLLBACK`` ended) or asyncpg's own (a transaction whose
    start or end was cancelled: asyncpg keeps it as the connection's outer one, and begins
    every later one on it as a ``SAVEPOINT`` inside it)."""
    return raw.is_in_transaction() or getattr(raw, "_top_xact", None) is not None


def _closed_if_inside_a_transaction(dbapi_connection: Any, record: Any) -> None:
    """The pool's ``checkin``, after its rollback: a connection still inside a transaction
    is closed at once and marked, and the next to take it is given a new one
    (:func:`_refused_if_inside_a_transaction`).

    Work given up as it began its transaction (the driver's ``BEGIN``, shared/db/driver.py)
    or ended it (a cancellation at ``COMMIT`` or ``ROLLBACK`` of asyncpg's own transaction:
    the relay's) passed no error through SQLAlchemy, which would have closed it: the
    connection went back to the pool inside that transaction, and every later transaction
    on it was a ``SAVEPOINT`` inside it, committing nothing while its own reads (the
    relay's) saw the rows (session 62's drill: orders answered 202, their events published,
    their rows never written). Closed without waiting (``terminate``: no await, which a
    cancellation could meet here), the server rolls it back, its locks freed at once.

    Those paths now close such a connection where its work was given up (:func:`discard`):
    this is the backstop, and its warning names a path that does not."""
    raw = getattr(dbapi_connection, "driver_connection", None)
    if raw is None or raw.is_closed() or not inside_a_transaction(raw):
        return
    log.warning("%s: closed, not used again", LEFT_INSIDE, extra=retried(LEFT_INSIDE))
    discard(raw, record.info)


def discard(raw: asyncpg.Connection, info: dict[Any, Any]) -> None:
    """Close the driver's connection ``raw`` at once and mark its pool record (``info``: a
    pooled connection's, or its record's) so that the pool never hands it out again
    (:func:`_refused_if_inside_a_transaction`): a connection whose state is not known, such
    as one whose ``BEGIN`` was given up (shared/db/driver.py). Closed without waiting
    (``terminate``: no await, which a cancellation could meet here), the server rolls back
    whatever it began, its locks freed at once."""
    info[LEFT_INSIDE] = True
    raw.terminate()


def _refused_if_inside_a_transaction(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """The pool's ``checkout``: a connection closed at its checkin
    (:func:`_closed_if_inside_a_transaction`), or still inside a transaction, is not handed
    out: SQLAlchemy closes it and makes a new one for the record."""
    if record.info.get(LEFT_INSIDE):
        raise sa_exc.DisconnectionError(LEFT_INSIDE)
    raw = getattr(dbapi_connection, "driver_connection", None)
    if raw is not None and not raw.is_closed() and inside_a_transaction(raw):
        log.warning("%s: not used again", LEFT_INSIDE, extra=retried(LEFT_INSIDE))
        raise sa_exc.DisconnectionError(LEFT_INSIDE)


def _answers(engine: AsyncEngine) -> Callable[..., None]:
    def connected(connection: Any, record: Any) -> None:
        answers_again(log, AWAY, f"PostgreSQL at {address(engine)}")

    return connected


class NoAnswer(ConnectionError):
    """A connection PostgreSQL did not answer within ``seconds`` (at ``where``)."""

    def __init__(self, where: str, seconds: float) -> None:
        super().__init__(f"PostgreSQL at {where} did not answer within {seconds:g} s")
        self.seconds = seconds


CLOSE_WITHIN = 0.25
"""Seconds a connection's cleanup may take once a :class:`Bound` gave its work up: SQLAlchemy
closes a connection cancelled mid-statement gracefully, waiting up to 2 s for the server's
answer, which a frozen server never gives (a ``/healthz`` bounded at 2 s answered at 4 s);
cancelled again, it closes it at once. A server that answers closes it in milliseconds."""


class Bound:
    """A bound of ``seconds`` (None: none) on the work of the task that enters it, as
    ``asyncio.timeout``'s: past it, the work is cancelled, and its cleanup too if it still
    waits :data:`CLOSE_WITHIN` later, and a ``TimeoutError`` is raised from where the
    cancellation met it. :meth:`reschedule` moves it (None: none for now)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.expired = False
        self._when: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancels = 0

    async def __aenter__(self) -> "Bound":
        task = asyncio.current_task()
        assert task is not None, "a bound on a task's work"
        self._task, self._loop = task, asyncio.get_running_loop()
        self.reschedule(None if self.seconds is None else self._loop.time() + self.seconds)
        return self

    def when(self) -> float | None:
        """When (the loop's clock) it gives the work up; None: not for now."""
        return self._when

    def reschedule(self, when: float | None) -> None:
        if self.expired:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when, self._handle = when, None
        if when is not None:
            self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._cancel()
        self._handle = self._loop.call_later(CLOSE_WITHIN, self._cancel)

    def _cancel(self) -> None:
        self._cancels += 1
        self._task.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: Any
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if not self.expired:
            return
        for _ in range(self._cancels):
            self._task.uncancel()
        if kind is asyncio.CancelledError and not self._task.cancelling():
            raise TimeoutError from exc


@asynccontextmanager
async def answered_within(engine: AsyncEngine, seconds: float) -> AsyncIterator[None]:
    """Database work on ``engine`` (a connection taken or made, its statements) that
    PostgreSQL must answer within ``seconds`` (:class:`Bound`), else it fails as
    :class:`NoAnswer` (PostgreSQL not reached: transient, away): where a caller answers
    someone waiting (a token's check, a ``/healthz`` probe), which the bounds of a connect
    (``db_connect_timeout_seconds``) and of a statement (``db_answer_timeout_seconds``, made
    to outwait a lock) made wait up to two minutes on a server frozen. A connection cancelled
    mid-statement is not pooled again (SQLAlchemy invalidates it). A ``TimeoutError`` of the
    work's own is raised as it is."""
    bound = Bound(seconds)
    try:
        async with bound:
            yield
    except TimeoutError as exc:
        if not bound.expired:
            raise
        raise (given_up(engine, seconds, exc) or NoAnswer(address(engine), seconds)) from exc


def given_up(engine: AsyncEngine, seconds: float, exc: TimeoutError) -> Exception | None:
    """What the work that a :class:`Bound` of ``seconds`` gave up (``exc``, raised from each
    cancellation where it met the work) waited on, as the fault it is: a free connection of
    ``engine``'s pool (SQLAlchemy's ``TimeoutError``: :attr:`Kind.POOL_EXHAUSTED`, the
    server answering others), else PostgreSQL's answer (:class:`NoAnswer`); None where it
    waited in neither's code."""
    modules: list[str] = []
    seen: BaseException | None = exc.__cause__
    while seen is not None:
        frames = traceback.walk_tb(seen.__traceback__)
        modules += [f.f_globals.get("__name__", "") for f, _ in frames]
        seen = seen.__context__
    if not any(m.startswith(("sqlalchemy", "asyncpg")) for m in modules):
        return None
    if "sqlalchemy.util.queue" in modules and not any(m.startswith("asyncpg") for m in modules):
        return sa_exc.TimeoutError(f"no free connection in the pool within {seconds:g} s")
    return NoAnswer(address(engine), seconds)


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
    traceback shows): an OS error says nothing of whose it is (:func:`fault`). The note is
    the plainest mark that keeps the error what it was: its class and words are what the
    CLI says, which a wrapping error of our own would change."""
    exc.add_note(f"{_CONNECTING} at {where}")
    return exc


def _marked(exc: BaseException, mark: str = _CONNECTING) -> bool:
    """Whether ``exc`` is marked so: as failed connecting to PostgreSQL (:func:`connecting`),
    or as met writing the rows held for a commit (:func:`at_commit`)."""
    return any(str(n).startswith(mark) for n in getattr(exc, "__notes__", ()))


_AT_COMMIT = "met writing the rows held for the commit"


def at_commit(exc: BaseException) -> BaseException:
    """``exc``, met writing the rows a transaction held for its commit (the unit of work's
    ``Tx.insert_later``), so marked (a note, as :func:`connecting`'s): a key taken then is
    one another transaction committed after this one looked for it (:attr:`Kind.RACE_LOST`),
    which the error's class does not say."""
    exc.add_note(_AT_COMMIT)
    return exc


KEEPALIVE_SECONDS = (30, 10, 3)
"""When the server asks whether a quiet client is still there, how often it asks again, and
how many unanswered asks end its session (``tcp_keepalives_idle``, ``_interval``,
``_count``): a client whose host went away (paused, cut off: a half-open connection) is
found gone within a minute, not the kernel's two hours. A frozen process's kernel still
answers them: its idle transaction is ended by the timeout (:func:`session_settings`)."""


def session_settings(settings: Settings, schema: str) -> dict[str, str]:
    """What each session of a service's :class:`Database` is set to at login: its name in
    ``pg_stat_activity`` (``caravan-<schema>``); a transaction left idle longer than
    ``db_idle_in_transaction_timeout_seconds`` ended by the server, its session with it
    (SQLSTATE 25P03, a connection lost to the process when it goes on), so that a process
    frozen mid-transaction frees its locks for the other instances; and TCP keepalives
    (:data:`KEEPALIVE_SECONDS`; ignored over a Unix socket)."""
    idle, interval, count = KEEPALIVE_SECONDS
    return {
        "application_name": f"caravan-{schema}",
        "idle_in_transaction_session_timeout": str(
            round(settings.db_idle_in_transaction_timeout_seconds * 1000)
        ),
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": str(count),
    }


_LOCK_WAITS = """
    SELECT extract(epoch FROM now() - query_start) AS waited, pg_blocking_pids(pid) AS holders
      FROM pg_stat_activity
     WHERE application_name = current_setting('application_name')
       AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()
"""
"""This service's sessions waiting for a lock (:meth:`Database.lock_waits`)."""


class Database:
    """A service's handle on PostgreSQL: the work's pool (:attr:`engine`), and a connection
    kept apart from it for ``/healthz`` (:meth:`answers`). Creating it connects to nothing."""

    def __init__(self, settings: Settings, schema: str) -> None:
        self.schema = schema
        connect_args = {
            "server_settings": session_settings(settings, schema),
            # A statement unanswered this long: its connection lost (fault: no answer).
            "command_timeout": settings.answer_timeout_seconds() or None,
        }
        self.pool_capacity = 2 * settings.db_pool_size
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
            connect_args=connect_args,
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # One connection, made at the first ask and kept: pinged before each (a round trip
        # a poll), so that one the server ended while it sat idle (a restart) is made again
        # at once rather than failing a poll; one asker at a time (_asking).
        self.apart: AsyncEngine = async_engine(
            settings.async_database_url(),
            settings,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args=connect_args,
        )
        self._asking = asyncio.Lock()

    async def answers(self, within: float) -> None:
        """PostgreSQL answering a ``SELECT 1`` within ``within`` seconds
        (:func:`answered_within`, else :class:`NoAnswer`; or the fault met), on a connection
        kept apart from the work's pool, as the service's own role and session settings:
        ``/healthz``'s, which took one of the pool's and, every one in use (a busy service,
        PostgreSQL answering), waited for one and answered 503, and a load balancer took a
        working instance away. Its connection, cancelled mid-statement (a server frozen), is
        closed and made again at the next ask; an ask while another waits waits for it,
        within the same bound (a frozen server answers neither). So does one while a token's
        read holds it (the pool all in use: ``Guard.sparing``), a statement of its own that
        PostgreSQL answers in milliseconds: waited for past ``within``, it is PostgreSQL not
        answering that read, not a pool too small, and said so (:class:`NoAnswer`)."""
        try:
            async with (
                answered_within(self.apart, within),
                self._asking,
                self.apart.connect() as conn,
            ):
                await conn.execute(text("SELECT 1"))
        except sa_exc.TimeoutError as exc:  # given_up's: waited for the one connection apart
            raise NoAnswer(address(self.apart), within) from exc

    async def lock_waits(self, within: float) -> str | None:
        """The sessions of this service (its ``application_name``, every instance's) that
        wait for a lock now, in words: ``1 of its sessions waits for a lock (for 74 s), held
        by PostgreSQL session 4242`` (the holders' pids, for ``pg_stat_activity`` and
        ``pg_cancel_backend``). ``/healthz`` says it beside a stall, where a handler blocked
        on a lock logged nothing and the stall's words sent operations to the log (session
        62's drill: a table locked 100 s). Asked on the connection apart within ``within``;
        None when none waits, or PostgreSQL does not answer in time (the check says only
        what it read)."""
        try:
            async with (
                answered_within(self.apart, within),
                self._asking,
                self.apart.connect() as conn,
            ):
                rows = (await conn.execute(text(_LOCK_WAITS))).all()
        except Exception:  # a word beside a stall, never the check's failure
            return None
        if not rows:
            return None
        longest = max(float(row.waited) for row in rows)
        holders = sorted({pid for row in rows for pid in row.holders})
        count = len(rows)
        sessions = "1 of its sessions waits" if count == 1 else f"{count} of its sessions wait"
        held = ""
        if holders:
            noun = "session" if len(holders) == 1 else "sessions"
            held = f", held by PostgreSQL {noun} {', '.join(map(str, holders))}"
        return f"{sessions} for a lock (for {longest:.0f} s){held}"

    def pool_use(self) -> tuple[int, int]:
        """The work's pool's connections in use and idle (open and free), as it counts them
        now: ``caravan_db_pool_connections``, beside :attr:`pool_capacity`."""
        pool = self.engine.pool
        if not isinstance(pool, QueuePool):
            return 0, 0
        return pool.checkedout(), pool.checkedin()

    def busy(self) -> str | None:
        """Whether every connection of the work's pool is in use (the next work waits for
        one, up to its bounds), in words (``all 20 connections of the pool in use``); None
        while one is free."""
        if self.pool_use()[0] < self.pool_capacity:
            return None
        return f"all {self.pool_capacity} connections of the pool in use"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction (:func:`begun`)."""
        async with begun(self.engine) as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()
        await self.apart.dispose()


@asynccontextmanager
async def begun(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection of ``engine`` inside one transaction, committed on success, rolled back
    on the work's failure: ``engine.begin()``, but the work's failure is what it raises, its
    rollback's own failure a note on it. A statement unanswered (``command_timeout``) has
    asyncpg cancel it and, the cancellation not through within the same bound, close the
    connection; a rollback begun after that (a loaded machine) failed "connection is
    closed", which SQLAlchemy raised in place of the statement's ``TimeoutError``: said as a
    connection lost without "(no answer in time)"."""
    failed: BaseException | None = None
    try:
        async with engine.begin() as conn:
            try:
                yield conn
            except BaseException as exc:
                failed = exc
                raise
    except Exception as exc:
        if failed is None or exc is failed:
            raise
        failed.add_note(f"and its rollback failed: {reason(exc)}")
    else:
        return
    raise failed  # outside the handler: its own context kept, not the rollback's


# A value PostgreSQL cannot take: refused by the server (SQLSTATE class 22, "data exception":
# text with NUL, a number beyond its column) or by asyncpg while encoding it (an int beyond
# int4 or int8, a date beyond PostgreSQL's). asyncpg's own is an InterfaceError, as a dropped
# connection is, but it never passes by itself.
_BAD_VALUE = (asyncpg.DataError, asyncpg.exceptions._base.DataError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's error, its adapted DBAPI error, asyncpg's."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return
        yield seen
        orig: BaseException | None = getattr(seen, "orig", None)
        seen = orig or seen.__cause__


class Kind(Enum):
    """What a fault met on PostgreSQL is (:func:`fault`). Each caller asks its own question
    of it: :attr:`transient` (retried, never dead-lettered; an HTTP 503), :attr:`away` (the
    token guard's stale-if-error), :attr:`lost` (the guard's one retry on a new connection),
    :attr:`unusable` (what the CLI says in one line, and what keeps an action the audit trail
    cannot record from being made), :attr:`RACE_LOST` (a consumer's try or a loop's round
    that lost a race: a warning); :func:`described` says each in words."""

    NOT_REACHED = "not reached"
    """No connection made: refused, the local cluster's socket gone, a name not resolved, no
    answer in time (an OS error of :func:`async_engine`'s connect, :class:`NoAnswer`)."""
    NOT_READY = "not ready"
    """The server turned the connection away while starting up or shutting down (57P03)."""
    CONNECTION_LOST = "connection lost"
    """A connection made and lost: closed (SQLAlchemy's dialect invalidated it; asyncpg's
    "connection is closed"), failed (class 08), ended by a shutdown or crash (57P01-57P02)
    or for a transaction left idle too long (25P03: :func:`session_settings`), or met while
    its end was being read (asyncpg's ``InternalClientError``: a pooled
    connection the server ended while it sat idle, taken before asyncpg saw it close), or a
    statement not answered within the connection's ``command_timeout`` (:class:`Database`:
    a server gone with no reset, a failover, a NAT entry dropped; asyncpg's ``TimeoutError``)."""
    CONNECTION_FAILED = "connection failed"
    """A ``ConnectionError`` that :func:`async_engine`'s connect did not mark: a socket of
    PostgreSQL's reset in use, or of another server the work used."""
    OS_ERROR = "OS error"
    """Any other OS error not marked as PostgreSQL's (a timeout, a file the work used)."""
    LOGIN_REFUSED = "login refused"
    """The server refused the login: the role or its password (class 28), no such database
    (3D000)."""
    TOO_MANY_CONNECTIONS = "too many connections"
    """The server has no connection to spare (53300): its ``max_connections`` all in use."""
    POOL_EXHAUSTED = "pool exhausted"
    """No free connection in the engine's pool within its timeout (SQLAlchemy's)."""
    REFUSED_FOR_NOW = "refused for now"
    """The server answers and refuses this work for now: a conflict (class 40), a lock not
    granted in time (55P03), short of disk, memory (class 53), an I/O error (58030), a write
    refused by a server that became a standby in a failover (25006)."""
    NOT_MIGRATED = "not migrated"
    """A table that does not exist (42P01): a database whose schemas were never migrated."""
    BAD_VALUE = "bad value"
    """A value PostgreSQL cannot take (class 22, or asyncpg's while encoding it)."""
    CLIENT_REFUSED = "client refused"
    """asyncpg refused the work itself (more than 32,767 parameters, a feature it lacks, a
    transaction misused): it refuses it again at every try."""
    RACE_LOST = "race lost"
    """A row held for the commit (:func:`at_commit`) whose key another transaction committed
    first (23505, a unique violation): two instances handling one order's events at once
    (each reading one of the topics that carry them, or during a rebalance). Tried again, the
    work finds that row. Not transient: a consumer counts it among a record's tries, so that
    work violating a key at every try (a bug) is still dead-lettered; it says a try lost so
    as a warning, not an error, and so does a background loop (:func:`log_retry`), unless
    it goes on losing it for over a minute."""
    FAILED = "failed"
    """Any other error of PostgreSQL's or its client's: a bug, a constraint, a statement past
    its ``statement_timeout`` (57014: one that always takes too long would stall its
    partition for good; it is dead-lettered after its tries, as a bug is)."""
    NOT_NAMED = "not named"
    """No database to ask at all: no ``DATABASE_URL``, and ``caravan up``'s own cluster not
    running (a command's, never a service's, which refuses to start without one)."""
    OTHER = "other"
    """Not PostgreSQL's at all."""

    @property
    def transient(self) -> bool:
        """Whether it passes by itself: retried with backoff, never dead-lettered."""
        return self in _TRANSIENT

    @property
    def away(self) -> bool:
        """Whether PostgreSQL cannot be reached from here at all, so that nobody can write
        to it meanwhile: not a server that answers others and refuses this (a conflict, too
        many connections, a login refused, the pool's own limit)."""
        return self in _AWAY

    @property
    def lost(self) -> bool:
        """Whether a connection that was made failed in use (one made again may work)."""
        return self in (Kind.CONNECTION_LOST, Kind.CONNECTION_FAILED)

    @property
    def unusable(self) -> bool:
        """Whether PostgreSQL cannot serve a command at all: not reached or not ready, the
        login refused, no connection to spare, its tables never made, none named."""
        return self in _UNUSABLE

    @property
    def ours(self) -> bool:
        """Whether it is known to be PostgreSQL's (an OS error is, marked by
        :func:`async_engine`'s connect): else said as it is, not named PostgreSQL's."""
        return self not in (Kind.CONNECTION_FAILED, Kind.OS_ERROR, Kind.OTHER)


_AWAY = (
    Kind.NOT_REACHED,
    Kind.NOT_READY,
    Kind.CONNECTION_LOST,
    Kind.CONNECTION_FAILED,
    Kind.OS_ERROR,
)
_TRANSIENT = (*_AWAY, Kind.TOO_MANY_CONNECTIONS, Kind.POOL_EXHAUSTED, Kind.REFUSED_FOR_NOW)
_UNUSABLE = (
    *(k for k in _AWAY if k is not Kind.OS_ERROR),
    Kind.LOGIN_REFUSED,
    Kind.TOO_MANY_CONNECTIONS,
    Kind.NOT_MIGRATED,
    Kind.NOT_NAMED,
)


@dataclass(frozen=True)
class Fault:
    """A fault's :class:`Kind` and ``error``, the one that said so (the driver's error, not
    SQLAlchemy's wrapper, which adds the statement)."""

    kind: Kind
    error: BaseException

    def __str__(self) -> str:
        """What it is in one line, as the CLI and the audit trail's refusals say it."""
        match self.kind:
            case Kind.NOT_MIGRATED:
                return f"the database is not migrated ({self.error})"
            case Kind.NOT_NAMED:
                return str(self.error)
            case Kind.LOGIN_REFUSED:
                return f"PostgreSQL refused the login: {self.error}"
            case Kind.TOO_MANY_CONNECTIONS:
                return f"PostgreSQL refused the connection, too many connections: {self.error}"
            case kind if kind.unusable:
                return f"cannot reach PostgreSQL: {self.error}"
        return reason(self.error)


# By SQLSTATE (whole, else its class): what the server says of a fault.
_BY_SQLSTATE = {
    "08": Kind.CONNECTION_LOST,
    "57P01": Kind.CONNECTION_LOST,
    "57P02": Kind.CONNECTION_LOST,
    "25P03": Kind.CONNECTION_LOST,  # a transaction idle too long: its session ended
    "57P03": Kind.NOT_READY,
    "28": Kind.LOGIN_REFUSED,
    "3D000": Kind.LOGIN_REFUSED,
    "53300": Kind.TOO_MANY_CONNECTIONS,
    "40": Kind.REFUSED_FOR_NOW,
    "53": Kind.REFUSED_FOR_NOW,
    "55P03": Kind.REFUSED_FOR_NOW,
    "58030": Kind.REFUSED_FOR_NOW,
    "25006": Kind.REFUSED_FOR_NOW,
    "42P01": Kind.NOT_MIGRATED,
    "22": Kind.BAD_VALUE,
}


def fault(exc: BaseException) -> Fault:
    """What ``exc`` is (:class:`Kind`), by it and what it wraps: the one way a fault met on
    PostgreSQL is sorted. A value that cannot be stored and a table that does not exist are
    said by whatever wraps them; else the first error that says more than its class does:
    SQLAlchemy's dialect invalidating the connection, its pool's timeout, an OS error
    :func:`async_engine`'s connect marked (:func:`connecting`, :class:`NoAnswer`), the
    server's SQLSTATE (and whether a unique violation was met at commit: :func:`at_commit`),
    asyncpg's own refusal ("connection is closed", or of the work). An OS error not so
    marked is said as such: it may be another server's, or a file's."""
    chain = list(_chain(exc))
    for error in chain:
        if isinstance(error, _BAD_VALUE):
            return Fault(Kind.BAD_VALUE, error)
        if isinstance(error, asyncpg.UndefinedTableError):
            return Fault(Kind.NOT_MIGRATED, error)
    for at, error in enumerate(chain):
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return Fault(Kind.CONNECTION_LOST, _driver(chain[at + 1 :]) or error)
        if isinstance(error, sa_exc.TimeoutError):
            return Fault(Kind.POOL_EXHAUSTED, error)
        if isinstance(error, NoAnswer) or _marked(error):
            return Fault(Kind.NOT_REACHED, error)
        if isinstance(error, TimeoutError) and _raised_in_asyncpg(error):
            return Fault(Kind.CONNECTION_LOST, error)  # a statement unanswered
        if isinstance(error, asyncpg.PostgresError):
            state = error.sqlstate or ""
            if state == "23505" and any(_marked(e, _AT_COMMIT) for e in chain):
                return Fault(Kind.RACE_LOST, error)
            kind = _BY_SQLSTATE.get(state) or _BY_SQLSTATE.get(state[:2]) or Kind.FAILED
            return Fault(kind, error)
        if isinstance(error, asyncpg.InternalClientError):
            # "cannot switch to state 15; another operation (2) is in progress": the server's
            # FATAL (57P01 at a shutdown) reached an idle connection, which asyncpg took for
            # a protocol error and waits on for good; it closes a moment later, and SQLAlchemy
            # does not pool it again. Another try is on a new connection.
            return Fault(Kind.CONNECTION_LOST, error)
        if isinstance(error, asyncpg.InterfaceError):
            closed = "connection is closed" in str(error)
            return Fault(Kind.CONNECTION_LOST if closed else Kind.CLIENT_REFUSED, error)
    failed = next((e for e in chain if isinstance(e, ConnectionError)), None)
    if failed is not None:
        return Fault(Kind.CONNECTION_FAILED, failed)
    # An OS error is one only as the error itself (below SQLAlchemy's wrappers), not as the
    # cause of another: a ValueError raised from a gaierror, a KeyError from a
    # PermissionError are a handler's own, and retried for ever they would stall its
    # partition.
    top = next((e for e in chain if not isinstance(e, sa_exc.SQLAlchemyError)), None)
    if isinstance(top, OSError):
        return Fault(Kind.OS_ERROR, top)
    if isinstance(exc, sa_exc.OperationalError):
        return Fault(Kind.REFUSED_FOR_NOW, exc.orig or exc)
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return Fault(Kind.FAILED, getattr(exc, "orig", None) or exc)
    return Fault(Kind.OTHER, exc)


def _raised_in_asyncpg(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in asyncpg's code: a ``TimeoutError`` so is its
    ``command_timeout``'s (:class:`Database`), a statement PostgreSQL did not answer in time,
    where a caller's own timeout is raised in the caller's code."""
    frames = traceback.walk_tb(exc.__traceback__)
    return any(f.f_globals.get("__name__", "").startswith("asyncpg") for f, _ in frames)


def _driver(chain: list[BaseException]) -> BaseException | None:
    """The driver's error in ``chain`` (below SQLAlchemy's): asyncpg's, else the adapted."""
    found = [e for e in chain if not isinstance(e, sa_exc.SQLAlchemyError)]
    return next((e for e in found if isinstance(e, asyncpg.PostgresError)), None) or next(
        iter(found), None
    )


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


RACE_LOST_FOR = 60.0
"""How long a background loop may go on losing the same race at commit, a minute at most
between two, before that is said as the bug it then is (:func:`log_retry`)."""


def log_retry(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a background loop's failed round that it will try again (a sweep, a dispatcher,
    the relay, retention): a transient fault, such as the database restarting, as a
    one-line warning, since it passes by itself; anything else as an error with its
    traceback, since it will not.

    A race lost at commit (:attr:`Kind.RACE_LOST`: two instances' loops on one row, in normal
    running) is a one-line warning naming the constraint, said as a retried fault is (each
    loop's and constraint's once, then once a minute: :class:`shared.logs.Faults`): the next
    round finds the row. The same loop losing the same race for over
    :data:`RACE_LOST_FOR` seconds (each time within a minute of the last) finds it at no
    round: an error with its traceback, each time, as a bug is."""
    found = fault(exc)
    if found.kind.transient:
        logger.warning(
            "%s; transient fault, retrying: %s", what, described(exc), extra=retried_fault(exc)
        )
    elif found.kind is Kind.RACE_LOST:
        said = reason(exc)  # the constraint, never the row's values
        race = f"{what}: {said}"
        lasted = FAULTS.lasted(race)
        if lasted < RACE_LOST_FOR:
            logger.warning(
                "%s; lost a race at commit, retrying: %s", what, said, extra=retried(race)
            )
        else:
            logger.error(
                "%s; lost the same race at commit for %.0f s, round after round: %s",
                what,
                lasted,
                said,
                exc_info=exc,
                extra=retried(race),
            )
    else:
        logger.error("%s", what, exc_info=exc)


__all__ = [
    "AsyncSession",
    "Database",
    "Fault",
    "Kind",
    "NoAnswer",
    "answered_within",
    "async_engine",
    "at_commit",
    "connecting",
    "fault",
    "given_up",
    "log_retry",
    "reason",
    "retried_fault",
]


AWAY = "PostgreSQL away"
"""The one fault that PostgreSQL not reached, not ready, or a connection to it lost are, as
:func:`retried_fault` keys them: one outage, whose words change as it goes on (ended, not
reached, starting up)."""


def retried_fault(exc: BaseException) -> dict[str, str]:
    """``extra`` for the warning of ``exc``, a fault that will be tried again: each fault is
    said once, then at most once a minute while it lasts (:class:`shared.logs.Faults`);
    PostgreSQL away (:data:`AWAY`) is one, any other transient fault is its words. Nothing
    for a fault that is not transient: its line is said each time. A refusal that lasts
    (:func:`refused_for`) is noted for ``/healthz`` (:data:`REFUSALS`): every path that
    retries a database fault says it through here."""
    found = fault(exc)
    if not found.kind.transient:
        return {}
    REFUSALS.met(found)
    return retried(AWAY if found.kind.away and found.kind.ours else described(exc))


_REFUSED_WORDS = {
    "53100": "its disk is full",
    "53200": "it is out of memory",
    "53400": "a limit of its configuration is reached",
    "53": "it is short of resources",
    "58030": "its disk failed a read or a write",
    "25006": "it takes no writes (a standby: a failover under way?)",
    "55P03": "a lock the work needs was not granted in time",
    "40": "the work met another's at the same moment and was undone",
}
"""Why PostgreSQL refuses the work for now (:attr:`Kind.REFUSED_FOR_NOW`), by SQLSTATE or
its class: words anyone may read (the server's own name its files)."""
LASTING = ("53", "58", "25006")
"""The refusals that last until someone acts (space freed, memory, a disk, the failover
done), unlike a lock or a conflict, which pass with the request that met them."""


def refused_for(exc: BaseException) -> str | None:
    """Why PostgreSQL refused the work of ``exc`` for now, in words and its SQLSTATE ("its
    disk is full (SQLSTATE 53100)"): what a 503 says where it said "the database is not
    reachable" of a database whose disk was full (session 49's drill). None for another
    fault."""
    refused = _refusal(fault(exc))
    return None if refused is None else refused[1]


def _refusal(found: Fault) -> tuple[str, str] | None:
    """The SQLSTATE of a refusal for now, and :func:`refused_for`'s words of it."""
    if found.kind is not Kind.REFUSED_FOR_NOW:
        return None
    state = getattr(found.error, "sqlstate", None) or ""
    words = _REFUSED_WORDS.get(state) or _REFUSED_WORDS.get(state[:2], "it refuses it for now")
    return state, f"{words} (SQLSTATE {state or '?'})"


class Refusals:
    """The latest refusal of the work that lasts (:data:`LASTING`: a disk full) this process
    met, for ``/healthz``: its ``SELECT 1`` is answered while every write fails, and it said
    ok all along (session 49's drill filled PostgreSQL's disk)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.latest: tuple[float, str] | None = None

    def met(self, found: Fault) -> None:
        """Note the fault ``found`` if it is a refusal that lasts."""
        refused = _refusal(found)
        if refused is not None and refused[0].startswith(LASTING):
            self.latest = (self.clock(), refused[1])

    def lately(self, within: float) -> str | None:
        """The refusal met within ``within`` seconds, said with how long ago; else None."""
        if self.latest is None:
            return None
        ago = self.clock() - self.latest[0]
        return f"{self.latest[1]}, last met {ago:.0f} s ago" if ago <= within else None


REFUSALS = Refusals()
"""The process's (:func:`retried_fault` notes, ``/healthz`` reads)."""
REFUSED_LATELY_SECONDS = 15.0
"""How long after the last refusal that lasts ``/healthz`` still says it: the work retried
meets it again within seconds (a loop's backoff is at most 5 s) while it lasts."""


def address(engine: AsyncEngine) -> str:
    """Where ``engine`` connects, as an operator would look for it: the Unix socket
    (``?host=/dir``: ``/dir/.s.PGSQL.<port>``, the local cluster's) or ``host:port``."""
    parsed = engine.url
    host = parsed.query.get("host") or parsed.host or "localhost"
    if isinstance(host, tuple):  # ?host=a&host=b: several tried in turn
        host = ",".join(host)
    port = parsed.port or 5432
    return f"{host.rstrip('/')}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


def described(exc: BaseException, where: str | None = None, *, public: bool = False) -> str:
    """What went wrong with PostgreSQL (at ``where``, :func:`address`), in words an
    operator can act on (by its :func:`fault`): what a retried fault's warning logs and
    ``/healthz`` says, where they said the exception's class (``FileNotFoundError``: the
    local cluster's socket gone). ``public``, for anyone who asks (``/healthz`` takes no
    token): neither where nor the server's own words (a login refused names the role), which
    the logs keep.

    ``cannot reach PostgreSQL at /x/.s.PGSQL.15432 (its socket is gone: the PostgreSQL
    server is not running)`` (``Connection refused`` on TCP; a name not resolved), ``PostgreSQL at
    ... refused the connection: the database system is starting up`` (or out of
    connections, a login refused), ``PostgreSQL at ... ended the connection: terminating
    connection due to administrator command``, ``lost the connection to PostgreSQL at ...``,
    ``no free connection to PostgreSQL at ... within the pool's timeout``; anything else its
    :func:`reason` (never a row's values). An error that is not PostgreSQL's
    (:attr:`Kind.ours`: an OS error of something else the work used) is said as it is, not
    named PostgreSQL's."""
    at = f" at {where}" if where and not public else ""
    found = fault(exc)
    kind, error = found.kind, found.error
    if not kind.ours:
        return (_os_reason(exc) or type(exc).__name__) if public else reason(exc)
    server = error if isinstance(error, asyncpg.PostgresError) else None  # its own words
    words = f": {server.message or server}" if server and not public else ""
    if kind is Kind.POOL_EXHAUSTED:
        return f"no free connection to PostgreSQL{at} within the pool's timeout"
    if kind in (Kind.NOT_READY, Kind.TOO_MANY_CONNECTIONS, Kind.LOGIN_REFUSED):
        return f"PostgreSQL{at} refused the connection{words}"
    if kind is Kind.CONNECTION_LOST:
        if server:
            return f"PostgreSQL{at} ended the connection{words}"
        unanswered = " (no answer in time)" if isinstance(error, TimeoutError) else ""
        return f"lost the connection to PostgreSQL{at}{unanswered}"
    if kind is Kind.NOT_REACHED:
        if isinstance(error, NoAnswer):  # async_engine's: it says where itself
            why: object = f"no answer within {error.seconds:g} s"
        elif _errno(error) == errno.ENOENT:  # a Unix socket's path with nothing at it
            why = SOCKET_GONE
        elif isinstance(error, TimeoutError) and not error.args:
            why = "no answer in time"
        else:
            why = _os_reason(error) or (None if public else error)
        return f"cannot reach PostgreSQL{at}" + (f" ({why})" if why else "")
    if public:
        if server:
            return f"PostgreSQL failed the statement (SQLSTATE {server.sqlstate or '?'})"
        return f"PostgreSQL failed ({type(exc).__name__})"
    return f"PostgreSQL{at}: {reason(server or exc)}"


SOCKET_GONE = "its socket is gone: the PostgreSQL server is not running"
"""Why PostgreSQL cannot be reached at a Unix socket's path with nothing at it (``No such file
or directory``, said so before: read as a file missing, a setting's path wrong): the server
removes its socket as it stops, and makes it as it starts."""


def _errno(exc: BaseException) -> int | None:
    """The errno of the first OS error ``exc`` is or wraps, if it has one."""
    return next((e.errno for e in _chain(exc) if isinstance(e, OSError) and e.errno), None)


def _os_reason(exc: BaseException) -> str | None:
    """The OS's words for an OS error ``exc`` is or wraps: by its errno, its own or one it
    wraps, else the wrapped error's own words (a name not resolved: a socket.gaierror's)."""
    oses = [e for e in _chain(exc) if isinstance(e, OSError)]
    numbers = [e.errno for e in oses if e.errno]
    if numbers and numbers[0] > 0:
        return os.strerror(numbers[0])
    return next((e.strerror for e in oses if e.strerror), None)
