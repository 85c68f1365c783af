"""A PostgreSQL that takes a service's statement and never answers, its connection left open
(a failover, a NAT entry dropped, a server frozen: no reset), between the service and the
server a forwarder that stops passing bytes (tests/harness.py ``forwarder``). A statement
then waited for its answer until the kernel gave up on the connection, about 15 minutes,
holding whatever task ran it: a consumer's partition, the outbox relay, a loop's claim, an
HTTP call. Now it waits ``CARAVAN_DB_ANSWER_TIMEOUT_SECONDS`` at most
(shared.db.engine.Database: asyncpg's ``command_timeout``), and fails as a connection to
PostgreSQL lost, PostgreSQL away: retried as any outage is, on a new connection.

``/healthz`` is not kept so long: it answers 503 within :data:`~shared.http.HEALTH_DB_WITHIN`
of its ``SELECT 1`` going unanswered, where a drill that froze PostgreSQL 45 s had it unanswered
for as long."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from caravan.system import Infrastructure
from shared.db import Database, driver
from shared.db.engine import AWAY, Kind, address, described, fault, retried_fault
from shared.http import HEALTH_DB_WITHIN, RETRY_SECONDS, create_app
from shared.logs import retried
from shared.settings import Settings
from tests.harness import forwarder, free_port, scratch_database

BOUND = 3.0  # the services' is 120 s
TABLE = "black_hole"


async def test_a_statement_unanswered_is_the_connection_lost_within_the_bound(
    infrastructure: Infrastructure,
) -> None:
    """A transaction's second statement, held: it fails within ``BOUND`` (and the rollback
    its transaction then tries) as a connection lost, said as PostgreSQL away, the row its
    first statement wrote undone; the bytes passing again, the work tried again on the same
    database is done once."""
    async with scratch_database(infrastructure.database_url, "caravan_hole") as url:
        target, port = make_url(url), free_port()
        via = target.set(host="127.0.0.1", port=port, query={})
        settings = Settings(
            database_url=via.render_as_string(hide_password=False),
            db_answer_timeout_seconds=BOUND,
        )
        db = Database(settings, "orders")
        passing = asyncio.Event()
        passing.set()
        pg = forwarder("127.0.0.1", target.port or 5432, passing)
        try:
            async with await asyncio.start_server(pg, "127.0.0.1", port):
                async with db.transaction() as conn:
                    await conn.execute(text(f"create table {TABLE} (n int primary key)"))

                async def work(held: bool) -> None:
                    async with db.transaction() as conn:
                        await conn.execute(text(f"insert into {TABLE} values (1)"))
                        if held:  # mid-flow: the server frozen, the connection left open
                            passing.clear()
                        raw = await driver.driver(conn)
                        await raw.fetchval(f"select count(*) from {TABLE}")

                began = time.monotonic()
                try:
                    await asyncio.wait_for(work(held=True), BOUND + 10)
                except Exception as exc:
                    failed: BaseException = exc
                else:
                    raise AssertionError("answered through a forwarder passing nothing")
                took = time.monotonic() - began
                assert BOUND - 0.5 < took < 2 * BOUND + 2, took
                assert fault(failed).kind is Kind.CONNECTION_LOST, repr(failed)
                assert described(failed, address(db.engine)) == (
                    f"lost the connection to PostgreSQL at 127.0.0.1:{port} (no answer in time)"
                )
                assert retried_fault(failed) == retried(AWAY)
                passing.set()
                await work(held=False)
                async with db.transaction() as conn:
                    assert await conn.scalar(text(f"select count(*) from {TABLE}")) == 1
        finally:
            passing.set()
            await db.dispose()


@dataclass
class Hole:
    """A service's database reached through a forwarder that stops passing bytes when
    ``passing`` is cleared."""

    db: Database
    passing: asyncio.Event


@asynccontextmanager
async def black_hole(database_url: str, schema: str, **settings: Any) -> AsyncIterator[Hole]:
    target, port = make_url(database_url), free_port()
    via = target.set(host="127.0.0.1", port=port, query={})
    db = Database(
        Settings(database_url=via.render_as_string(hide_password=False), **settings), schema
    )
    hole = Hole(db, asyncio.Event())
    hole.passing.set()
    pg = forwarder("127.0.0.1", target.port or 5432, hole.passing)
    try:
        async with await asyncio.start_server(pg, "127.0.0.1", port):
            yield hole
    finally:
        hole.passing.set()
        await db.dispose()


async def _timed(call: Callable[[], Any], bound: float) -> tuple[httpx.Response, float]:
    """``call``'s answer and how long it took, failing past ``bound`` and 10 s more."""
    began = time.monotonic()
    answer = await asyncio.wait_for(call(), bound + 10)
    return answer, time.monotonic() - began


async def test_healthz_says_postgresql_does_not_answer_within_its_bound(
    infrastructure: Infrastructure,
) -> None:
    """PostgreSQL frozen: ``/healthz`` is a 503 within :data:`HEALTH_DB_WITHIN`, saying the
    database does not answer, with Retry-After (it was no answer at all while the server
    was frozen: a load balancer saw timeouts); the bytes passing again, ok."""
    async with black_hole(infrastructure.database_url, "orders") as hole:
        app = create_app("orders", hole.db, Settings())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hole") as http:
            assert (await http.get("/healthz")).status_code == 200
            hole.passing.clear()
            answer, took = await _timed(lambda: http.get("/healthz"), HEALTH_DB_WITHIN)
            assert took < HEALTH_DB_WITHIN + 1, took
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == str(RETRY_SECONDS)
            said = f"cannot reach PostgreSQL (no answer within {HEALTH_DB_WITHIN:g} s)"
            assert answer.json()["checks"]["database"] == said
            assert answer.json()["down"] == ["database"]
            hole.passing.set()
            assert (await http.get("/healthz")).status_code == 200
