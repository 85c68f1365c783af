"""What a failing statement of a service's engine (shared/db/engine.py) says: the statement,
never its values. Consumers log the traceback of a record they give up on, HTTP 500s log
theirs, and a statement's values are buyers' addresses, phone numbers and texts. A dead
letter's reason says the error's kind, message, SQLSTATE and constraint, not the row. And
which of asyncpg's refusals pass by themselves: a connection lost does, a statement asyncpg
will not send does not (a record whose handler sends one is dead-lettered). A key taken at
commit is a race lost to another instance: a warning, and the record is tried again."""

import asyncio
import json
import logging
import random
import threading
import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import Column, MetaData, String, Table, bindparam, select, text
from sqlalchemy import exc as sa_exc

from caravan import system
from services import SERVICES
from shared import days
from shared.db import Database, fault
from shared.db.driver import transaction
from shared.events.envelope import new_event
from shared.events.inventory import StockSold
from shared.events.payments import InstalmentDue
from shared.events.registry import Parsed
from shared.http import PROBLEM, RETRY_SECONDS, create_app
from shared.logs import FAULTS
from shared.loops import sweeping
from shared.messaging.consumer import Consumer, Handler, Subscription
from shared.messaging.tables import add_messaging_tables
from shared.messaging.uow import Tx, UnitOfWork
from shared.settings import Settings
from shared.topics import EventType, Topic
from tests.conftest import own_port
from tests.e2e.test_ops import cli
from tests.harness import System, order_events, ref, scratch_database
from tests.unit.conftest import saying_retried_faults

ADDRESS = "Shawan County, 3 Jujube Lane, +8613912345678"
# An IN list takes a parameter each (the services write ``= ANY(array)``: shared/db/driver.py).
TOO_MANY_PARAMETERS = text("SELECT 1 WHERE 1 IN :xs").bindparams(bindparam("xs", expanding=True))


async def test_a_failing_statement_says_none_of_its_values(
    infrastructure: system.Infrastructure,
) -> None:
    db = Database(Settings(DATABASE_URL=infrastructure.database_url), "orders")
    try:
        with pytest.raises(sa_exc.DBAPIError) as failed:
            async with db.transaction() as conn:
                # PostgreSQL's own message (division by zero) does not echo the value.
                await conn.execute(
                    text("SELECT CAST(:address AS text), 1 / 0"), {"address": ADDRESS}
                )
    finally:
        await db.dispose()
    said = "".join(traceback.format_exception(failed.value))
    assert "division by zero" in said
    assert "Jujube Lane" not in said


async def test_a_statement_asyncpg_refuses_is_not_transient_and_a_lost_connection_is(
    infrastructure: system.Infrastructure,
) -> None:
    """What asyncpg raises on real PostgreSQL: more than 32,767 parameters is refused at
    every try (an ``InterfaceError``, as a closed connection is); a connection the server
    ended is retried."""
    db = Database(Settings(DATABASE_URL=infrastructure.database_url), "orders")
    try:
        with pytest.raises(sa_exc.InterfaceError) as refused:
            async with db.transaction() as conn:
                await conn.execute(TOO_MANY_PARAMETERS, {"xs": list(range(33_000))})
        assert "cannot exceed 32767" in str(refused.value)
        assert not fault(refused.value).kind.transient
        with pytest.raises(sa_exc.DBAPIError) as lost:
            async with db.transaction() as conn:
                pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
                async with db.transaction() as other:
                    await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                await conn.execute(text("SELECT 1"))
        assert fault(lost.value).kind.transient, repr(lost.value)
    finally:
        await db.dispose()


def _ended_while_nobody_looks(url: str, pid: int) -> None:
    """Make the server end backend ``pid`` (a FATAL 57P01, as at a shutdown) and wait until
    it has, with this thread's event loop blocked: the FATAL and the connection's end wait
    unread on its socket."""

    async def terminate() -> None:
        db = Database(Settings(DATABASE_URL=url), "orders")
        try:
            async with db.transaction() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
        finally:
            await db.dispose()

    thread = threading.Thread(target=asyncio.run, args=(terminate(),))
    thread.start()
    thread.join()


async def test_a_pooled_connection_the_server_ended_while_idle_is_a_lost_connection(
    infrastructure: system.Infrastructure,
) -> None:
    """A connection the server ends while it sits idle in the pool (a database outage
    test's shutdown) gets the FATAL unasked: asyncpg takes it for a protocol error and waits
    for the server's next "ready", which never comes, until it reads the connection's end.
    Taken from the pool in between, as the relay's next round did in CI, its first statement
    fails "cannot switch to state 15; another operation (2) is in progress" (asyncpg's
    InternalClientError): a connection lost, retried on a new one, not an error that will
    not pass (the relay logged it as an ERROR with its traceback)."""
    db = Database(Settings(DATABASE_URL=infrastructure.database_url), "orders")
    try:
        async with transaction(db.engine) as raw:
            pid = await raw.fetchval("SELECT pg_backend_pid()")
        _ended_while_nobody_looks(infrastructure.database_url, pid)
        await asyncio.sleep(0)  # the loop sees the socket readable: the FATAL is read
        await asyncio.sleep(0)  # its end not yet
        with pytest.raises(asyncpg.InternalClientError) as met:
            async with transaction(db.engine) as raw:
                await raw.fetchval("SELECT 1")
        assert "another operation (2) is in progress" in str(met.value)
        assert fault(met.value).kind.lost, repr(met.value)  # transient: retried, a warning
        async with transaction(db.engine) as raw:  # not handed out again
            assert await raw.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await db.dispose()


@dataclass
class Scratch:
    """A service of the test's own on a scratch database: its messaging tables, and
    ``paid``, a row per order written at commit (as payments' payment rows are)."""

    db: Database
    outbox: Table
    inbox: Table
    paid: Table

    def consumer(self, handler: Handler, batch_size: int = 1) -> Consumer:
        """A consumer of inventory events (three tries), ``handler`` handling stock.sold."""
        uow = UnitOfWork(self.db, "caravan/scratch", self.outbox, self.inbox)
        consumer = Consumer("t-scratch-e2e", "caravan-t-scratch-e2e", uow, 3, batch_size, 1, 1, 1)
        consumer.register(Subscription(Topic.INVENTORY_EVENTS, {EventType.STOCK_SOLD: handler}))
        return consumer

    async def rows(self, table: Table) -> list[Any]:
        async with self.db.transaction() as conn:
            return list((await conn.execute(select(table))).all())


@asynccontextmanager
async def scratch(infrastructure: system.Infrastructure) -> AsyncIterator[Scratch]:
    async with scratch_database(infrastructure.database_url, "caravan_scratch") as url:
        metadata = MetaData(schema="scratch")
        outbox, inbox = add_messaging_tables(metadata)
        paid = Table(
            "paid", metadata, Column("order_id", String, primary_key=True), Column("by", String)
        )
        db = Database(Settings(DATABASE_URL=url), "scratch")
        try:
            async with db.transaction() as conn:
                await conn.execute(text("CREATE SCHEMA scratch"))
                await conn.run_sync(metadata.create_all)
            yield Scratch(db, outbox, inbox, paid)
        finally:
            await db.dispose()


def sold(order_id: str, offset: int = 5) -> ConsumerRecord:
    value = new_event(StockSold(order_id=order_id), source="caravan/inventory").to_json()
    return ConsumerRecord(
        Topic.INVENTORY_EVENTS.value, 0, offset, 0, 0, b"k", value, None, 1, len(value), []
    )


async def test_a_record_whose_statement_asyncpg_refuses_is_dead_lettered_not_retried(
    infrastructure: system.Infrastructure,
) -> None:
    """A consumer on real PostgreSQL whose handler sends a statement of 33,000 parameters:
    the record is dead-lettered with asyncpg's reason after its tries (it was retried as a
    transient fault for ever, its partition stalled behind it)."""
    async with scratch(infrastructure) as service:
        tried = 0

        async def too_many_parameters(tx: Tx, parsed: Parsed) -> None:
            nonlocal tried
            tried += 1
            await tx.conn.execute(TOO_MANY_PARAMETERS, {"xs": list(range(33_000))})

        consumer = service.consumer(too_many_parameters)
        await asyncio.wait_for(consumer.dispatch(sold("o-33000")), 30)
        letters = [(r.topic, r.headers) for r in await service.rows(service.outbox)]
    assert tried == 3
    [(topic, headers)] = letters
    assert topic == Topic.INVENTORY_EVENTS.dlq
    assert headers["dlq.error"] == "handler_error"
    assert "cannot exceed 32767" in headers["dlq.error.message"]


def paying(service: Scratch, raced: set[str]) -> Handler:
    """A handler that writes the order's ``paid`` row at commit unless it finds one, as
    payments' ``_claim_payment`` does. At its first try for an order in ``raced``, another
    instance's transaction writes that row meanwhile, between the read and the commit (it
    handled the order's event of the other topic, during a rebalance)."""

    async def pay(tx: Tx, parsed: Parsed) -> None:
        assert isinstance(parsed.data, StockSold)
        await pay_order(service, tx, parsed.data.order_id, raced)

    return pay


async def pay_order(service: Scratch, tx: Tx, order_id: str, raced: set[str]) -> None:
    """:func:`paying`'s work for ``order_id``."""
    query = select(service.paid.c.order_id).where(service.paid.c.order_id == order_id)
    if (await tx.conn.execute(query.with_for_update())).first() is not None:
        return
    if order_id in raced:
        raced.discard(order_id)
        async with service.db.transaction() as other:
            await other.execute(service.paid.insert().values(order_id=order_id, by="other"))
    tx.insert_later(service.paid, {"order_id": order_id, "by": "this"})


def consumer_said(
    caplog: pytest.LogCaptureFixture, logger: str = "shared.messaging.consumer"
) -> list[tuple[int, str, bool]]:
    """The consumer's lines (or ``logger``'s): level, message, and whether a traceback came
    with it."""
    return [
        (r.levelno, r.getMessage(), r.exc_info is not None)
        for r in caplog.records
        if r.name == logger
    ]


RACE_LOST = (
    'UniqueViolationError: duplicate key value violates unique constraint "paid_pkey"'
    " (SQLSTATE 23505, constraint paid_pkey, table paid)"
)


async def test_a_row_another_instance_wrote_first_at_commit_is_a_warning_then_found(
    infrastructure: system.Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    """Two payments instances, each reading one of the two topics that carry one order's
    events during a rebalance, both found no payment row and wrote one at commit; one commit
    failed on payments_pkey. Tried again, the record finds the row, as designed: that try
    was logged as an ERROR with its traceback ("handler failed (attempt 1/3)"), which pages
    an operator for a race the design expects. It is a warning naming the constraint (never
    the row's values), and the record is handled once."""
    async with scratch(infrastructure) as service:
        consumer = service.consumer(paying(service, raced={"o-raced"}))
        with caplog.at_level(logging.WARNING, logger="shared.messaging.consumer"):
            await asyncio.wait_for(consumer.dispatch(sold("o-raced")), 30)
        paid = await service.rows(service.paid)
        handled = await service.rows(service.inbox)
    assert [tuple(row) for row in paid] == [("o-raced", "other")]
    assert len(handled) == 1  # recorded handled, by the second try
    assert consumer_said(caplog) == [
        (logging.WARNING, f"lost a race at commit (attempt 1/3), retrying: {RACE_LOST}", False)
    ]


async def test_a_batch_whose_commit_loses_a_race_is_handled_again_one_by_one_without_an_error(
    infrastructure: system.Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    """The same race met by a batch's commit: the batch is handled again a record at a time,
    and its warning says why as a dead letter's reason does, naming the constraint (it said
    the error's repr, which may quote values: a pydantic ValidationError's quotes the
    input's)."""
    async with scratch(infrastructure) as service:
        consumer = service.consumer(paying(service, raced={"o-raced"}), batch_size=2)
        with caplog.at_level(logging.WARNING, logger="shared.messaging.consumer"):
            await consumer.dispatch_batch([sold("o-raced", 5), sold("o-alone", 6)])
        paid = await service.rows(service.paid)
        handled = await service.rows(service.inbox)
    assert sorted(tuple(row) for row in paid) == [("o-alone", "this"), ("o-raced", "other")]
    assert len(handled) == 2
    assert consumer_said(caplog) == [
        (logging.WARNING, f"a batch of 2 failed ({RACE_LOST}); handling it one by one", False)
    ]


async def test_a_handler_that_violates_a_key_at_every_try_is_dead_lettered_with_an_error(
    infrastructure: system.Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    """A race lost at commit is still a failed try: a handler that writes a key taken at
    every try (a bug) is dead-lettered after its three, its last try an error with its
    traceback, as any failed handler's."""
    async with scratch(infrastructure) as service:
        async with service.db.transaction() as conn:
            await conn.execute(service.paid.insert().values(order_id="o-taken", by="before"))
        tried = 0

        async def pay_blindly(tx: Tx, parsed: Parsed) -> None:
            nonlocal tried
            tried += 1
            tx.insert_later(service.paid, {"order_id": "o-taken", "by": "this"})

        consumer = service.consumer(pay_blindly)
        with caplog.at_level(logging.WARNING, logger="shared.messaging.consumer"):
            await asyncio.wait_for(consumer.dispatch(sold("o-taken")), 30)
        letters = await service.rows(service.outbox)
    assert tried == 3
    [letter] = letters
    assert letter.headers["dlq.error"] == "handler_error"
    assert letter.headers["dlq.error.message"] == RACE_LOST
    lost = "lost a race at commit (attempt {}/3), retrying: " + RACE_LOST
    topic = Topic.INVENTORY_EVENTS.value
    letter_said = (
        f"dead-lettering {topic}[0]@5: handler_error: {RACE_LOST} (`caravan dlq list --topic"
        f" {topic} --waiting` lists it, to send back mended or discard: docs/operations.md, Dead"
        " letters waiting)"
    )
    assert consumer_said(caplog) == [
        (logging.WARNING, lost.format(1), False),
        (logging.WARNING, lost.format(2), False),
        (logging.ERROR, "handler failed (attempt 3/3)", True),
        (logging.WARNING, letter_said, False),
    ]


async def test_a_loop_losing_a_race_at_commit_warns_and_losing_it_for_a_minute_is_an_error(
    infrastructure: system.Infrastructure,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two instances' sweeps on one row, one commit failing on its key, is normal running:
    the next round finds the row. A background loop logged it as an ERROR with its traceback
    (``log_retry``), as a bug. It is a warning naming the constraint, said once a minute at
    most (a retried fault's, through ``FAULTS``); the same loop losing the same race round
    after round for over a minute is the bug it then is: an error with its traceback."""
    loop = logging.getLogger("tests.race_loop")
    clock = saying_retried_faults(caplog.handler, monkeypatch)  # as a service logs
    caplog.set_level(logging.INFO, logger=loop.name)
    async with scratch(infrastructure) as service:
        uow = UnitOfWork(service.db, "caravan/scratch", service.outbox, service.inbox)
        rounds = 0
        lost_four = asyncio.Event()

        async def sweep() -> int:
            """A round paying an order whose row another instance writes between this
            round's read and its commit; each round 30 s after the last."""
            nonlocal rounds
            if rounds == 4:
                lost_four.set()
                await asyncio.Event().wait()
            rounds += 1
            order_id = f"o-swept-{rounds}"
            try:
                async with uow.begin() as tx:
                    await pay_order(service, tx, order_id, {order_id})
            finally:
                clock.now += 30
            return 1

        task = asyncio.create_task(sweeping(sweep, 0.01, loop, "paid %d", "paying failed"))
        try:
            await asyncio.wait_for(lost_four.wait(), 30)
        finally:
            task.cancel()
            caplog.handler.removeFilter(FAULTS)
    assert consumer_said(caplog, loop.name) == [
        (logging.WARNING, f"paying failed; lost a race at commit, retrying: {RACE_LOST}", False),
        *[
            (
                logging.ERROR,
                f"paying failed; lost the same race at commit for {lasted} s, round after"
                f" round: {RACE_LOST}",
                True,
            )
            for lasted in (60, 90)
        ],
    ]


async def test_a_request_whose_commit_loses_a_race_is_a_409_saying_to_send_it_again(
    infrastructure: system.Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    """Two requests writing one row at once, each having read that there was none: the one
    that commits second failed on the key, and was answered 500 "the request failed unexpectedly",
    its traceback an error line, as a bug. It is a 409 problem saying to send it again, and a
    warning naming the constraint; sent again, the request finds the row."""
    async with scratch(infrastructure) as service:
        uow = UnitOfWork(service.db, "caravan/scratch", service.outbox, service.inbox)
        app = create_app("orders", service.db, Settings())
        raced = {"o-http"}

        @app.post("/pay/{order_id}")
        async def pay(order_id: str) -> dict[str, str]:
            async with uow.begin() as tx:
                await pay_order(service, tx, order_id, raced)
            return {"paid": order_id}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scratch") as client:
            with caplog.at_level(logging.INFO, logger="shared.http"):
                first = await client.post("/pay/o-http")
            again = await client.post("/pay/o-http")
        paid = await service.rows(service.paid)
    assert (first.status_code, first.headers["content-type"]) == (409, PROBLEM), first.text
    assert first.json() == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "another request changed the same data at the same moment, and this one's"
        " change was undone: send it again",
    }
    assert consumer_said(caplog, "shared.http") == [
        (logging.WARNING, f"POST /pay/o-http: 409, lost a race at commit: {RACE_LOST}", False)
    ]
    assert (again.status_code, again.json()) == (200, {"paid": "o-http"})
    assert [tuple(row) for row in paid] == [("o-http", "other")]


async def test_a_dead_letter_says_which_constraint_refused_a_row_but_not_the_row(
    caravan: System,
) -> None:
    """A constraint refuses the text notifications records for an order (a check that this
    one phone number fails, for this test alone; a number that is no mainland mobile, whose
    text is recorded failed through SQLAlchemy): the reminder asking for it is dead-lettered
    after its tries, and its ``dlq.error.message`` names the constraint and SQLSTATE 23514,
    not PostgreSQL's DETAIL ("Failing row contains (<sms id>, <dedup key>, <purpose>,
    <phone>, ...)"). Then the letter is redriven, so that no replay of the session's topics
    handles its event again and records a text (a record dead-lettered is not in the inbox:
    test_ops.py's replay from the earliest offset saw one text more)."""
    phone = "+86120" + "".join(random.choices("0123456789", k=8))
    events = order_events(ref("REFUSED"), phone)
    order_id = events.placed.order_id
    await caravan.handled("notifications", await caravan.publish(events.placed))
    due = InstalmentDue(
        order_id=order_id,
        loan_id=f"loan-{order_id}"[:36],
        buyer_id="t-rich",
        number=1,
        due=days.today() - timedelta(days=1),
        amount_fen=4000,
        stage="overdue",
    )
    constraint = f"test_refuses_{uuid.uuid4().hex[:8]}"
    await caravan.execute(
        f"alter table notifications.sms add constraint {constraint}"
        f""" check ("to" <> '{phone}') not valid"""
    )
    try:
        await caravan.publish(due, source="caravan/payments")
        letters = await caravan.wait_for(
            lambda: caravan.log.letters(Topic.PAYMENT_EVENTS, order_id, "notifications")
        )
    finally:
        await caravan.execute(f"alter table notifications.sms drop constraint {constraint}")
    headers = {k: (v or b"").decode() for k, v in letters[0].headers}
    reason = headers["dlq.error.message"]
    assert headers["dlq.error"] == "handler_error"
    assert phone not in reason and order_id not in reason and "DETAIL" not in reason, reason
    assert constraint in reason and "SQLSTATE 23514" in reason, reason
    # Mended (the check gone), the letter is redriven as operations would: the reminder's
    # text is recorded (failed: the number is no mainland mobile), and its event is in the
    # inbox, so that a replay of every topic from its start (test_ops.py) does not text again.
    letter = f"{letters[0].topic}:{letters[0].partition}:{letters[0].offset}"
    done = await cli(caravan, "dlq", "redrive", letter)
    assert done.returncode == 0 and f"redriven: {letter}" in done.stdout, done.stderr
    await caravan.wait_for(
        lambda: caravan.log.events(
            Topic.NOTIFICATION_EVENTS, type="sms.failed", order_id=order_id, to=phone
        )
    )


async def test_a_postgresql_outage_is_one_warning_a_service_then_a_line_when_it_answers(
    caravan: System,
) -> None:
    """PostgreSQL stopped for 52 s, the five services logged 534 warnings (orders 148): every
    loop's and every request's at each retry. Each says the fault once (then at most once a
    minute while it lasts) and, once a connection is made again, that PostgreSQL answers,
    after how long and how many warnings were not logged; here six requests each that meet
    the outage (a token never seen is read from the database: 503) and a /healthz, besides
    its loops. Each 503 says when to ask again (``Retry-After``: /healthz's said nothing)."""
    never = await caravan.issue_token(f"outage-logs-{uuid.uuid4().hex[:6]}", "ops")
    logs = {service: caravan.procs.log_dir / f"{service}.log" for service in SERVICES}
    before = {service: log.stat().st_size for service, log in logs.items()}
    pg = caravan.infra.local_postgres
    assert pg is not None and caravan.engine is not None, "this needs the project's PostgreSQL"
    await asyncio.to_thread(pg.stop, "fast")
    try:
        for service in SERVICES:
            async with caravan.api(service, token=never) as api:
                for _ in range(6):
                    answer = await api.get("/metrics")
                    asked = (answer.status_code, answer.headers.get("retry-after"))
                    assert asked == (503, str(RETRY_SECONDS)), service
                health = await api.get("/healthz")  # PostgreSQL away too: no line of its own
                asked = (health.status_code, health.headers.get("retry-after"))
                assert asked == (503, str(RETRY_SECONDS)), service
    finally:
        await asyncio.to_thread(pg.start)
        await caravan.engine.dispose()  # the test's own pooled connections died with it

    def since(service: str) -> list[dict[str, Any]]:
        with logs[service].open("rb") as log:
            log.seek(before[service])
            return [json.loads(line) for line in log.read().splitlines() if line.startswith(b"{")]

    for service in SERVICES:
        lines = await caravan.until(
            lambda: since(service),  # noqa: B023 (awaited in this round)
            f"{service} saying PostgreSQL answers again",
            ready=lambda lines: any("answers again" in line["message"] for line in lines),
        )
        end = next(i for i, line in enumerate(lines) if "answers again" in line["message"])
        warned = [line["message"] for line in lines[:end] if line["level"] == "warning"]
        assert len(warned) == 1, (service, warned)
        assert "PostgreSQL" in warned[0], (service, warned)
        assert "warnings of it not logged" in lines[end]["message"], lines[end]


async def test_a_postgresql_outage_is_one_warning_of_the_operations_page_then_a_line(
    caravan: System, tmp_path: Path
) -> None:
    """PostgreSQL down, the operations page's log (``.cache/logs/dashboard.log``) had a line
    a request, every 2 s while the page was open: "cannot reach PostgreSQL ...; token
    'dev-vm-...' taken as read N s ago". It says the fault once, as a service does, then
    that PostgreSQL answers again."""
    seen = await caravan.issue_token(f"outage-page-{uuid.uuid4().hex[:6]}", "ops")
    log = tmp_path / "dashboard.log"
    port = own_port("http", __name__)
    pg = caravan.infra.local_postgres
    assert pg is not None and caravan.engine is not None, "this needs the project's PostgreSQL"

    def saying(words: str) -> list[str]:
        return [line for line in log.read_text().splitlines() if words in line]

    async with (
        caravan.operations_page(port, log=log) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {seen}"}) as page,
    ):
        assert (await page.get("/")).status_code == 200  # read from auth.tokens
        await asyncio.to_thread(pg.stop, "fast")
        try:
            # Past the cache's 2 s, the token is taken as read before, each request.
            await caravan.until(
                lambda: page.get("/"),
                "the operations page answering with the token taken as read before",
                ready=lambda _: saying("taken as read"),
            )
            for _ in range(5):
                assert (await page.get("/")).status_code == 200
            warned = saying("taken as read")
            assert len(warned) == 1, warned
        finally:
            await asyncio.to_thread(pg.start)
            await caravan.engine.dispose()  # the test's own pooled connections died with it
        answered = await caravan.until(
            lambda: page.get("/"),
            "the operations page saying PostgreSQL answers again",
            ready=lambda _: saying("answers again"),
        )
        assert answered.status_code == 200
    back = json.loads(saying("answers again")[0])
    assert back["level"] == "info" and "warnings of it not logged" in back["message"], back
    assert saying("taken as read") == warned
