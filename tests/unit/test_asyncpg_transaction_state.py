"""What :func:`shared.db.engine.inside_a_transaction` reads of asyncpg still tells a connection
whose ``BEGIN`` was given up: asyncpg's own record of the transaction it began (its private
``Connection._top_xact``, read by name). Renamed or kept otherwise by a later asyncpg, the
read would find nothing, and the pool would hand out again, without a word, a connection on
which every transaction is a ``SAVEPOINT`` never committed (session 62's orders answered 202
and lost). The real ``Connection`` and ``Transaction`` of the installed asyncpg, on a protocol
that answers nothing (no server)."""

import asyncio
from typing import Any

import asyncpg
import pytest

from shared.db.engine import inside_a_transaction

RENAMED = (
    "asyncpg no longer keeps the transaction a connection is beginning as the connection's "
    "_top_xact (asyncpg/transaction.py, Transaction.start): shared/db/engine.py "
    "inside_a_transaction() reads it by that name, and without it the pool's guard and the "
    "driver's (shared/db/driver.py) no longer see a connection left inside a transaction "
    "whose BEGIN was given up. Find what asyncpg keeps it as now and read that there."
)


class Silent:
    """A protocol that is connected and outside a transaction, and answers no query until
    ``answered`` is set."""

    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.asked = asyncio.Event()
        self.sent: list[str] = []

    def is_connected(self) -> bool:
        return True

    def is_in_transaction(self) -> bool:
        return False

    async def query(self, query: str, timeout: float | None) -> str:
        self.sent.append(query)
        self.asked.set()
        await self.answered.wait()
        return query.split()[0].rstrip(";")


def _connection(protocol: Silent) -> Any:
    """A real asyncpg ``Connection`` (its state as ``__init__`` sets it, the attributes that
    transactions use) on ``protocol``."""
    conn: Any = object.__new__(asyncpg.Connection)
    conn._protocol = protocol
    conn._aborted = False
    conn._pool_release_ctr = 0
    conn._query_loggers = []
    conn._top_xact = None
    return conn


async def test_a_begin_given_up_leaves_the_connection_inside_a_transaction_as_read() -> None:
    """A transaction whose ``BEGIN`` is cancelled before the server answered: the connection
    is inside a transaction as :func:`inside_a_transaction` reads it (asyncpg would begin the
    next one as a ``SAVEPOINT``); one begun and committed leaves it outside."""
    assert "_top_xact" in asyncpg.Connection.__slots__, RENAMED
    protocol = Silent()
    conn = _connection(protocol)
    try:
        await _begun_given_up_then_committed(conn, protocol)
    finally:
        conn._aborted = True  # closed: nothing to say of it when it is collected


async def _begun_given_up_then_committed(conn: Any, protocol: Silent) -> None:
    assert not inside_a_transaction(conn)

    begin = asyncio.create_task(conn.transaction().start())
    await protocol.asked.wait()
    begin.cancel()
    with pytest.raises(asyncio.CancelledError):
        await begin
    assert protocol.sent == ["BEGIN;"]
    assert inside_a_transaction(conn), RENAMED

    conn._top_xact = None  # as a new connection is
    protocol.answered.set()
    transaction = conn.transaction()
    await transaction.start()
    assert inside_a_transaction(conn), RENAMED
    await transaction.commit()
    assert not inside_a_transaction(conn), RENAMED
    assert protocol.sent[1:] == ["BEGIN;", "COMMIT;"]
