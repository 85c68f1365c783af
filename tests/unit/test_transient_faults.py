"""Which faults are retried (transient) and which are not: a database that is shutting down
or restarting is transient; a bug is not (and deciding must never raise). Background loops
log the first kind as a warning and the second as an error with its traceback."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from services.inventory.entrypoints.subscribers import hold_expiry_loop
from services.orders.entrypoints.subscribers import expiry_loop
from services.payments.entrypoints.loops import reminder_loop
from shared.db import bad_value, is_transient, log_retry
from shared.settings import Settings


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
    assert is_transient(exc)


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
    assert is_transient(error)
    assert is_transient(_as_sqlalchemy_raises(error))


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
    assert not is_transient(exc)


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
        assert not is_transient(exc)
        assert bad_value(exc) is cause
    assert bad_value(asyncpg.AdminShutdownError("terminating")) is None
    assert is_transient(sa_exc.InterfaceError("SELECT 1", {}, asyncpg.InterfaceError("closed")))


def test_a_loop_logs_a_transient_fault_as_a_warning_and_a_bug_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("tests.loop")
    with caplog.at_level(logging.INFO, logger="tests.loop"):
        log_retry(log, "sweep failed", ConnectionRefusedError(111, "Connect call failed"))
        try:
            raise ValueError("bad")
        except ValueError as exc:
            log_retry(log, "sweep failed", exc)
    transient, bug = caplog.records
    assert (transient.levelno, transient.exc_info) == (logging.WARNING, None)
    assert "transient fault" in transient.getMessage()
    assert bug.levelno == logging.ERROR and bug.exc_info is not None
    assert bug.exc_info[0] is ValueError


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
