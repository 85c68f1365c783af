"""A PostgreSQL that takes a service's statement and never answers, its connection left open
(a failover, a NAT entry dropped, a server frozen: no reset), between the service and the
server a forwarder that stops passing bytes (tests/harness.py ``forwarder``). A statement
then waited for its answer until the kernel gave up on the connection, about 15 minutes,
holding whatever task ran it: a consumer's partition, the outbox relay, a loop's claim, an
HTTP call. Now it waits ``CARAVAN_DB_ANSWER_TIMEOUT_SECONDS`` at most
(shared.db.engine.Database: asyncpg's ``command_timeout``), and fails as a connection to
PostgreSQL lost, PostgreSQL away: retried as any outage is, on a new connection.

An HTTP client is not kept so long: ``/healthz`` answers 503 within
:data:`~shared.http.HEALTH_DB_WITHIN` of its ``SELECT 1`` going unanswered, and any route within
``CARAVAN_HTTP_DB_TIMEOUT_SECONDS`` of its request's database work (shared.http.Deadline), where
a drill that froze PostgreSQL 45 s had ``/healthz`` unanswered for as long and the orders API
wait as long (up to two minutes) on a pooled connection. A busy service, its pool all in use
and PostgreSQL answering, is neither: a request waits for a connection, and ``/healthz``, asking
on a connection of its own, says the pool full (200, degraded)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from caravan.ops.dashboard import ASK_WITHIN, SAMPLE_WITHIN, Dashboard
from caravan.system import Infrastructure
from services.orders.adapters.tables import inbox, outbox
from services.orders.entrypoints.http import create_app as orders_app
from services.orders.entrypoints.ops import ops_router
from shared.api import DATABASE_BUSY, bearer_headers
from shared.db import Database, driver
from shared.db.engine import AWAY, Kind, address, described, fault, retried_fault
from shared.http import HEALTH_DB_WITHIN, RETRY_SECONDS, create_app
from shared.logs import retried
from shared.messaging.uow import UnitOfWork
from shared.settings import Settings
from tests.e2e.test_http import BODY
from tests.harness import System, forwarder, free_port, ref, scratch_database

BOUND = 3.0  # the services' is 120 s
TABLE = "black_hole"


@pytest.mark.parametrize("late", [0.0, 1.0])
async def test_a_statement_unanswered_is_the_connection_lost_within_the_bound(
    infrastructure: Infrastructure, late: float
) -> None:
    """A transaction's second statement, held: it fails within ``BOUND`` (and the rollback
    its transaction then tries) as a connection lost, said as PostgreSQL away, the row its
    first statement wrote undone; the bytes passing again, the work tried again on the same
    database is done once. The rollback begun ``late`` (a loaded machine: CI, once, began it
    after asyncpg's cancellation of the statement had given up, ``BOUND`` after it was sent,
    and closed the connection): the rollback's own "connection is closed" was what the
    transaction raised, said without "(no answer in time)"; it is the statement's."""
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
                        try:
                            await raw.fetchval(f"select count(*) from {TABLE}")
                        finally:
                            await asyncio.sleep(late if held else 0)

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
    ``passing`` is cleared (or when it is sent a ``COMMIT`` while ``at_commit`` is set, a
    ``BEGIN`` while ``at_begin`` is)."""

    db: Database
    passing: asyncio.Event
    at_commit: bool = False
    at_begin: bool = False


@asynccontextmanager
async def black_hole(
    database_url: str, schema: str, delay: float = 0.0, **settings: Any
) -> AsyncIterator[Hole]:
    """``schema``'s :class:`Database` (with ``settings``) reaching PostgreSQL through a
    forwarder (:func:`~tests.harness.forwarder`, its statements ``delay`` seconds on their
    way there)."""
    target, port = make_url(database_url), free_port()
    via = target.set(host="127.0.0.1", port=port, query={})
    db = Database(
        Settings(database_url=via.render_as_string(hide_password=False), **settings), schema
    )
    hole = Hole(db, asyncio.Event())
    hole.passing.set()
    pg = forwarder(
        "127.0.0.1",
        target.port or 5432,
        hole.passing,
        lambda data: (hole.at_commit and b"COMMIT" in data) or (hole.at_begin and b"BEGIN" in data),
        delay,
    )
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
    was frozen: a load balancer saw timeouts), a poll waiting for another's ask too; the
    bytes passing again, ok (its connection made again)."""
    async with black_hole(infrastructure.database_url, "orders") as hole:
        app = create_app("orders", hole.db, Settings())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hole") as http:
            assert (await http.get("/healthz")).status_code == 200
            hole.passing.clear()
            began = time.monotonic()
            # Two load balancers at once: one asks on /healthz's connection, one waits for it.
            both = asyncio.gather(http.get("/healthz"), http.get("/healthz"))
            answers = await asyncio.wait_for(both, HEALTH_DB_WITHIN + 10)
            took = time.monotonic() - began
            assert took < HEALTH_DB_WITHIN + 1, took
            said = f"cannot reach PostgreSQL (no answer within {HEALTH_DB_WITHIN:g} s)"
            for answer in answers:
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == str(RETRY_SECONDS)
                assert answer.json()["checks"]["database"] == said
                assert answer.json()["down"] == ["database"]
            hole.passing.set()
            assert (await http.get("/healthz")).status_code == 200


async def test_healthz_of_a_busy_service_says_its_pool_full_not_postgresql_away(
    infrastructure: Infrastructure,
) -> None:
    """Every connection of the service's pool in use (a burst of requests, its consumers and
    loops each holding one), PostgreSQL answering: ``/healthz`` waited for a free one and
    answered 503 after :data:`HEALTH_DB_WITHIN`, and a load balancer took a working instance
    away, its load moving to the others. Its ``SELECT 1`` is asked on a connection kept apart
    from the pool: a 200, degraded, naming the pool full; that one connection made once and
    kept, poll after poll, and made again when the server ended it (a restart)."""
    async with scratch_database(infrastructure.database_url, "caravan_busy") as url:
        db = Database(Settings(database_url=url, db_pool_size=1), "orders")  # 2 at a peak
        admin = create_async_engine(url, poolclass=NullPool)
        ours = (
            "from pg_stat_activity"
            " where datname = current_database() and application_name = 'caravan-orders'"
        )

        async def connections() -> int:
            async with admin.connect() as conn:
                return int(await conn.scalar(text(f"select count(*) {ours}")) or 0)

        app = create_app("orders", db, Settings())
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://busy") as http:
                assert (await http.get("/healthz")).json()["status"] == "ok"
                async with admin.connect() as conn:  # as a restart ends it: made again
                    assert await conn.scalar(text(f"select pg_terminate_backend(pid, 5000) {ours}"))
                assert (await http.get("/healthz")).json()["status"] == "ok"
                async with db.engine.connect() as one, db.engine.connect() as two:
                    await one.execute(text("select 1"))
                    await two.execute(text("select 1"))
                    answer = await http.get("/healthz")  # not a free one's wait: a 503
                    assert answer.status_code == 200, answer.text
                    busy = "busy: all 2 connections of the pool in use"
                    assert answer.json() == {
                        "status": "degraded",
                        "down": ["database"],
                        "detail": f"database: {busy}",
                        "checks": {
                            "database": busy,
                            "kafka": "ok",
                            "consumer": "ok",
                            "relay": "ok",
                        },
                    }
                    for _ in range(5):
                        assert (await http.get("/healthz")).status_code == 200
                    assert await connections() == 3  # the pool's two, and /healthz's one
                assert (await http.get("/healthz")).json()["status"] == "ok"
        finally:
            await db.dispose()
            await admin.dispose()


async def _pool_of(http: httpx.AsyncClient) -> dict[str, float]:
    """The orders pool's figures as ``/metrics`` says them: connections by state, capacity."""
    page = await http.get("/metrics")
    assert page.status_code == 200, page.text
    said = {}
    for family in text_string_to_metric_families(page.text):
        for sample in family.samples:
            if sample.name.startswith("caravan_db_pool_") and sample.labels["service"] == "orders":
                said[sample.labels.get("state", "capacity")] = sample.value
    return said


async def test_metrics_say_the_pool_s_connections_in_use_and_its_capacity(
    caravan: System,
) -> None:
    """A busy service's pool was seen only in ``/healthz``'s snapshot, a 200 degraded, which
    no alert reads: ``/metrics`` says its connections in use and idle, read at the scrape, and
    its capacity (twice ``CARAVAN_DB_POOL_SIZE``), all in use as work holds them."""
    async with black_hole(caravan.infra.database_url, "orders", db_pool_size=1) as hole:
        app = create_app("orders", hole.db, Settings(auth_cache_seconds=0))
        async with _client(app, caravan.token) as http:
            # The token's read, at each scrape, took one and gave it back.
            assert await _pool_of(http) == {"in_use": 0, "idle": 1, "capacity": 2}
            async with hole.db.engine.connect() as one:
                await one.execute(text("select 1"))
                # The token's read opened the pool's second, left idle.
                assert await _pool_of(http) == {"in_use": 1, "idle": 1, "capacity": 2}
                async with hole.db.engine.connect() as two:
                    await two.execute(text("select 1"))
                    # Both held: the token's read is not one more waiting for one of them.
                    began = time.monotonic()
                    pool = await asyncio.wait_for(_pool_of(http), 10)
                    assert pool == {"in_use": 2, "idle": 0, "capacity": 2}
                    assert time.monotonic() - began < 1
            # The one past the pool's size closed as it came back.
            assert await _pool_of(http) == {"in_use": 0, "idle": 1, "capacity": 2}


# A burst of calls with tokens never read valid, to a service whose statements take this
# long to reach PostgreSQL: each read queued on /healthz's connection holds it for several
# round trips, so that a few dozen of them outlast /healthz's bound.
BURST, LINK_DELAY = 80, 0.02


async def test_healthz_of_a_busy_service_is_not_held_behind_the_token_reads_of_a_burst(
    caravan: System,
) -> None:
    """The pool all in use, a token is read on the connection ``/healthz`` asks on, one read
    at a time: each of 1,500 calls at once with a token never read valid (a guess, not
    cached; from one address, none throttled before it failed) queued a read there,
    ``/healthz`` behind them, and answered 503 "no free connection" (after 6.8 s, the event
    loop busy with the calls), as when it asked on the pool: a load balancer took a busy
    instance away for calls with no token of ours. The others wait for the pool, as they
    did before it was read on that connection. :data:`BURST` calls to a database
    :data:`LINK_DELAY` away make that queue here: 1,500 calls, their client and the app in
    the test's one event loop, stalled it 3 to 17 s at loads of 9 to 30 on two cores, and
    where a stall fell in ``/healthz``'s 2 s, that ran out on the CPU, not on the queue."""
    url = caravan.infra.database_url
    async with black_hole(url, "orders", delay=LINK_DELAY, db_pool_size=1) as hole:
        app = create_app("orders", hole.db, Settings())
        async with (
            _client(app, caravan.token) as http,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 4242)),
                base_url="http://hole",
            ) as stranger,
        ):
            assert (await http.get("/healthz")).json()["status"] == "ok"
            async with hole.db.engine.connect() as one, hole.db.engine.connect() as two:
                await one.execute(text("select 1"))
                await two.execute(text("select 1"))
                guesses = [
                    stranger.get("/metrics", headers=bearer_headers(f"cvn_{uuid.uuid4().hex}"))
                    for _ in range(BURST)
                ]
                burst = asyncio.gather(*guesses)
                await asyncio.sleep(0.2)  # their reads under way
                answer, took = await _timed(lambda: http.get("/healthz"), HEALTH_DB_WITHIN)
                refused = {r.status_code for r in await burst}
            assert refused <= {401, 503}, refused  # each read (or waited for the pool)
            assert answer.status_code == 200, (took, answer.text)
            assert answer.json()["checks"]["database"] == (
                "busy: all 2 connections of the pool in use"
            )


async def test_healthz_says_postgresql_does_not_answer_while_a_token_read_holds_its_connection(
    caravan: System,
) -> None:
    """The pool all in use, a token read on the connection ``/healthz`` asks on (Guard.sparing),
    and PostgreSQL frozen: the read waits for its answer (up to the guard's 4 s), and
    ``/healthz``, waiting for that connection, said "no free connection to PostgreSQL within
    the pool's timeout", an operator's cue to raise CARAVAN_DB_POOL_SIZE, where the database
    does not answer: it says so, as it does when it asks alone."""
    async with black_hole(caravan.infra.database_url, "orders", db_pool_size=1) as hole:
        app = create_app("orders", hole.db, Settings())
        async with _client(app, caravan.token) as http:
            assert (await http.get("/healthz")).json()["status"] == "ok"
            async with hole.db.engine.connect() as one, hole.db.engine.connect() as two:
                await one.execute(text("select 1"))
                await two.execute(text("select 1"))
                hole.passing.clear()
                guess = bearer_headers(f"cvn_{uuid.uuid4().hex}")  # never cached: read
                read = asyncio.ensure_future(http.get("/metrics", headers=guess))
                await asyncio.sleep(0.2)  # its read under way on /healthz's connection
                answer, took = await _timed(lambda: http.get("/healthz"), HEALTH_DB_WITHIN)
                assert took < HEALTH_DB_WITHIN + 1, took
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == str(RETRY_SECONDS)
                said = f"cannot reach PostgreSQL (no answer within {HEALTH_DB_WITHIN:g} s)"
                assert answer.json()["checks"]["database"] == said
                assert (await asyncio.wait_for(read, 15)).status_code == 503
                hole.passing.set()
            assert (await http.get("/healthz")).status_code == 200


DEADLINE = 3.0  # the services' is 8 s


@asynccontextmanager
async def orders_hole(
    caravan: System, deadline: float = DEADLINE, **more: Any
) -> AsyncIterator[tuple[Hole, FastAPI]]:
    """The orders API's app on the session's database through a black hole, its requests'
    database work bounded by ``deadline`` (``more`` settings of its database)."""
    url = caravan.infra.database_url
    async with black_hole(url, "orders", http_db_timeout_seconds=deadline, **more) as hole:
        uow = UnitOfWork(hole.db, "caravan/orders", outbox, inbox)
        settings = Settings(http_db_timeout_seconds=deadline)
        yield hole, orders_app(uow, timedelta(seconds=settings.saga_deadline_seconds), settings)


@asynccontextmanager
async def orders_api(caravan: System, **more: Any) -> AsyncIterator[tuple[Hole, httpx.AsyncClient]]:
    """:func:`orders_hole`, asked in this process with the session's token."""
    async with orders_hole(caravan, **more) as (hole, app), _client(app, caravan.token) as http:
        yield hole, http


def _client(app: FastAPI, token: str) -> httpx.AsyncClient:
    """A client of ``app`` (in this process) sending ``token``."""
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(
        transport=transport, base_url="http://hole", headers=bearer_headers(token)
    )


def _unanswered(answer: httpx.Response, took: float) -> None:
    assert took < DEADLINE + 1, took
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == str(RETRY_SECONDS)
    assert answer.json()["detail"] == f"the database did not answer within {DEADLINE:g} s; retry"


async def test_a_request_postgresql_does_not_answer_is_a_503_within_the_deadline(
    caravan: System,
) -> None:
    """PostgreSQL frozen while the orders API holds a pooled connection: ``GET /orders/{id}``
    waited for the consumers' bound (two minutes); it is a 503 within the request's, saying
    the database did not answer, and answers again once the bytes pass."""
    order_id = str(uuid.uuid4())
    async with orders_api(caravan) as (hole, http):
        assert (await http.get(f"/orders/{order_id}")).status_code == 404
        hole.passing.clear()
        _unanswered(*await _timed(lambda: http.get(f"/orders/{order_id}"), DEADLINE))
        hole.passing.set()
        assert (await http.get(f"/orders/{order_id}")).status_code == 404


async def test_the_operations_page_passes_on_the_orders_api_s_503_for_postgresql_not_answering(
    caravan: System,
) -> None:
    """PostgreSQL frozen under the orders API: the operations page's order lookup gave the API
    up after 2 s, "the orders API is not reachable (ReadTimeout); retry", where the API says
    within ``CARAVAN_HTTP_DB_TIMEOUT_SECONDS`` that its database did not answer. The page waits
    for the API past that bound, its own request's bound (the same setting's) not counting
    that wait, and passes the API's 503 on; the bytes passing again, the order's answer."""
    order_id, port = str(uuid.uuid4()), free_port()
    async with orders_hole(caravan) as (hole, orders), served(orders, port):
        url, token = caravan.infra.database_url, caravan.token
        settings = Settings(
            database_url=url, token=token, CARAVAN_HTTP_PORT=port, http_db_timeout_seconds=DEADLINE
        )
        app = Dashboard(settings).create_app()
        try:
            async with _client(app, token) as page:
                first = await page.get(f"/orders/{order_id}")
                assert first.status_code == 404, first.text
                hole.passing.clear()
                _unanswered(*await _timed(lambda: page.get(f"/orders/{order_id}"), DEADLINE))
                hole.passing.set()
                assert (await page.get(f"/orders/{order_id}")).status_code == 404
        finally:
            await app.state.guard.engine.dispose()


@asynccontextmanager
async def stuck_page(
    caravan: System, monkeypatch: pytest.MonkeyPatch, slow: float
) -> AsyncIterator[tuple[Hole, Dashboard]]:
    """The operations page beside the session's services but the orders API, served over HTTP
    through a black hole with ``slow`` as its requests' and the page's
    ``CARAVAN_HTTP_DB_TIMEOUT_SECONDS``; its stuck orders sampled once, the bytes passing."""
    port = free_port()
    for name, value in caravan.procs.env.items():  # the page beside the services
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CARAVAN_HTTP_PORT", str(port))  # the orders API through the hole
    monkeypatch.setenv("CARAVAN_HTTP_DB_TIMEOUT_SECONDS", str(slow))
    async with orders_hole(caravan, slow) as (hole, orders), served(orders, port):
        orders.include_router(ops_router(hole.db, Settings().stuck_after_seconds()))
        page = Dashboard(Settings(token=caravan.token))
        assert "stuck" not in (await page.sample()).unavailable
        try:
            yield hole, page
        finally:
            hole.passing.set()


async def test_the_operations_page_s_stuck_orders_say_the_orders_api_s_503_for_a_frozen_database(
    caravan: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL frozen under the orders API: the operations page gave its stuck orders up at
    ``ASK_WITHIN`` (5 s), "orders API unreachable (ReadTimeout)", where the API says within
    ``CARAVAN_HTTP_DB_TIMEOUT_SECONDS`` (8 s) that its database did not answer. The page waits
    past that bound, as its order lookup does, and says the API's reason; the bytes passing
    again, the stuck orders."""
    slow = ASK_WITHIN + 1
    async with stuck_page(caravan, monkeypatch, slow) as (hole, page):
        hole.passing.clear()
        snap = await asyncio.wait_for(page.sample(), SAMPLE_WITHIN + 5)  # its own bound
        said = f"HTTP 503: the database did not answer within {slow:g} s; retry"
        assert snap.unavailable.get("stuck") == said, snap.unavailable
        hole.passing.set()
        assert "stuck" not in (await page.sample()).unavailable


async def test_the_stuck_orders_are_given_up_within_what_is_left_of_the_sample_s_bound(
    caravan: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stuck orders waited for past the orders API's bound on its database (20 s here)
    would take the whole sample with them past its own bound (12 s here), every figure lost
    ("no sample within 12 s"): they are given up within what is left of it, said as the
    orders API not answering, and the rest of the sample kept."""
    from caravan.ops import dashboard

    monkeypatch.setattr(dashboard, "SAMPLE_WITHIN", 12.0)
    async with stuck_page(caravan, monkeypatch, 20.0) as (hole, page):
        hole.passing.clear()
        snap = await asyncio.wait_for(page.sample(), 12.0 + 5)
        assert snap.unavailable.get("stuck") == "orders API unreachable (ReadTimeout)"
        assert snap.health["inventory"] == "ok", snap.health


@asynccontextmanager
async def served(app: FastAPI, port: int) -> AsyncIterator[None]:
    """``app`` served over HTTP on ``port`` (its clients' timeouts apply, as ASGI's do not)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not serving.done(), serving.exception()
                await asyncio.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_an_order_whose_commit_went_unanswered_is_found_by_its_retry(
    caravan: System,
) -> None:
    """PostgreSQL frozen as it was sent ``POST /orders``'s COMMIT: a 503 within the deadline;
    the server going on, the order is placed after all (the client was told to retry, not
    that nothing was done), and the client's retry with its Idempotency-Key is answered that
    order, not a second one."""
    key = ref("HOLE")
    sent = {"Idempotency-Key": key}
    async with orders_api(caravan) as (hole, http):
        hole.at_commit = True
        _unanswered(*await _timed(lambda: http.post("/orders", json=BODY, headers=sent), DEADLINE))
        hole.at_commit = False
        hole.passing.set()  # the COMMIT held reaches the server, on a connection closed since
        query = "select order_id from orders.orders where order_ref = :ref"
        placed = await caravan.until(
            lambda: caravan.sql(query, ref=key), "the order held at its commit", timeout=10
        )
        again = await http.post("/orders", json=BODY, headers=sent)
        assert again.status_code == 202, again.text
        assert [str(row[0]) for row in placed] == [again.json()["order_id"]]
        assert len(await caravan.sql(query, ref=key)) == 1


async def test_every_order_answered_202_after_one_given_up_at_its_begin_is_written(
    caravan: System,
) -> None:
    """PostgreSQL frozen as it was sent ``POST /orders``'s ``BEGIN`` (its first statement is
    the driver's, which begins the transaction: shared/db/driver.py): a 503 within the
    deadline; the server going on, every order answered 202 after it is in orders.orders.
    The connection went back to the pool inside asyncpg's cancelled transaction, and each
    order placed on it later was a ``SAVEPOINT`` in it, never committed (session 62's drill:
    107 orders answered 202, their events published, their rows never written)."""
    async with orders_api(caravan, db_pool_size=1) as (hole, http):
        first = await http.post("/orders", json=BODY, headers={"Idempotency-Key": ref("BEGUN")})
        assert first.status_code == 202, first.text  # the token read, cached
        hole.at_begin = True
        held = {"Idempotency-Key": ref("BEGUN")}
        _unanswered(*await _timed(lambda: http.post("/orders", json=BODY, headers=held), DEADLINE))
        hole.at_begin = False
        hole.passing.set()
        keys = [ref("BEGUN") for _ in range(6)]
        for key in keys[:3]:
            answer = await http.post("/orders", json=BODY, headers={"Idempotency-Key": key})
            assert answer.status_code == 202, answer.text
        answers = await asyncio.gather(
            *(http.post("/orders", json=BODY, headers={"Idempotency-Key": k}) for k in keys[3:])
        )
        assert [a.status_code for a in answers] == [202] * 3, [a.text for a in answers]
        query = "select order_ref from orders.orders where order_ref = any(:refs)"
        written = {row[0] for row in await caravan.sql(query, refs=keys)}
        assert written == set(keys), f"answered 202, not written: {sorted(set(keys) - written)}"


async def test_a_request_waiting_for_a_pooled_connection_past_the_deadline_is_told_busy(
    caravan: System,
) -> None:
    """Every connection of the pool in use (PostgreSQL answering): a request given up at the
    deadline is told the database takes no more connections now, not that it did not answer."""
    order_id = str(uuid.uuid4())
    async with orders_api(caravan, db_pool_size=1) as (hole, http):
        assert (await http.get(f"/orders/{order_id}")).status_code == 404  # the token read
        async with hole.db.engine.connect() as one, hole.db.engine.connect() as two:
            await one.execute(text("select 1"))
            await two.execute(text("select 1"))
            answer, took = await _timed(lambda: http.get(f"/orders/{order_id}"), DEADLINE)
        assert took < DEADLINE + 1, took
        assert (answer.status_code, answer.json()["detail"]) == (503, DATABASE_BUSY)
        assert (await http.get(f"/orders/{order_id}")).status_code == 404
