"""The outbox relay sends a row once across a graceful stop and two instances of a service
(shared/messaging/relay.py), on real Kafka and PostgreSQL. In a rolling restart under load
(session 48's drill), events were published twice: a service asked to stop (SIGTERM)
cancelled its relay (``Service.serve``) while the batch Kafka had taken waited to commit
its marks, which rolled back; the producer's stop delivered what it held, and the other
instance's relay took the rows, unsent, and sent them again. The relay now lets the batch
under way commit its marks before it lets go. Two relays take turns by the schema's lock: a
batch one holds, the other does not take."""

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from caravan import system
from services.orders.adapters.tables import outbox
from shared.db import Database, driver
from shared.messaging.relay import LOCKED, OutboxRelay, make_producer
from tests.e2e.test_messaging_retention import orders_tables, topics_with
from tests.e2e.test_outbox_relay import read_topic
from tests.harness import until, waiting_behind

ROWS = 20


@pytest.fixture
async def db(infrastructure: system.Infrastructure) -> AsyncIterator[Database]:
    async with orders_tables(infrastructure) as db:
        yield db


@pytest.fixture
async def topic(infrastructure: system.Infrastructure) -> str:
    """A topic of the test's own, with one partition: every record of it is the test's."""
    return (await topics_with(infrastructure.kafka_bootstrap, once={}))["once"]


async def with_rows(db: Database, topic: str) -> list[bytes]:
    """``ROWS`` outbox rows for ``topic``, committed; their values."""
    values = [f"row-{i}".encode() for i in range(ROWS)]
    async with db.engine.begin() as conn:
        await conn.execute(insert(outbox), [{"topic": topic, "value": v} for v in values])
    return values


async def unsent(db: Database) -> int:
    async with db.engine.connect() as conn:
        query = select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        return int(await conn.scalar(query) or 0)


async def started(db: Database, bootstrap: str, instance: str) -> OutboxRelay:
    """The orders relay of one instance, its producer started."""
    factory = functools.partial(make_producer, bootstrap, f"caravan-orders-{instance}")
    relay = OutboxRelay(db, outbox, factory, service="orders")
    await relay.producer.start()
    return relay


def held_once_answered(
    relay: OutboxRelay, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make ``relay``'s batch wait, once Kafka has answered every row of it and before its
    marks are committed, until the second event is set; the first is set when it begins to
    wait."""
    answered, go_on = asyncio.Event(), asyncio.Event()
    publish = relay._publish

    async def publish_then_wait(rows: list[Any]) -> list[BaseException | None]:
        answers = await publish(rows)
        answered.set()
        await go_on.wait()
        return answers

    monkeypatch.setattr(relay, "_publish", publish_then_wait)
    return answered, go_on


async def batch_holder(db: Database) -> int:
    """The pid of the one session holding a batch of the outbox, its marks not committed
    (its ``UPDATE``'s lock on the table, held to the end of its transaction)."""
    query = text(
        "select pid from pg_locks where relation = cast(:outbox as regclass)"
        " and mode = 'RowExclusiveLock' and granted"
    )
    async with db.engine.connect() as conn:
        [pid] = (await conn.execute(query, {"outbox": driver.qualified(outbox)})).scalars()
    return int(pid)


async def ended_or_waiting(task: asyncio.Task[Any], db: Database, holder: int) -> bool:
    """Whether ``task`` has ended, or a session waits for a lock the session ``holder``
    holds (:func:`tests.harness.waiting_behind`)."""
    return task.done() or bool(await waiting_behind(db.engine, holder))


def published_twice(values: list[bytes], found: list[bytes]) -> dict[bytes, int]:
    """The rows' values ``found`` on the topic other than once."""
    counts = Counter(found)
    return {v: counts[v] for v in values if counts[v] != 1}


async def test_a_relay_stopped_while_kafka_has_its_batch_marks_it_sent_before_it_lets_go(
    infrastructure: system.Infrastructure,
    db: Database,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One instance's relay cancelled as its service stops, once Kafka has answered its
    batch and before the marks commit: the batch commits, and the other instance's relay,
    taking over, finds nothing to send. Each row is on the topic once."""
    bootstrap = infrastructure.kafka_bootstrap
    values = await with_rows(db, topic)
    first = await started(db, bootstrap, "1")
    second: OutboxRelay | None = None
    running: asyncio.Task[None] | None = None
    try:
        answered, go_on = held_once_answered(first, monkeypatch)
        running = asyncio.create_task(first.run())
        await asyncio.wait_for(answered.wait(), 30)
        running.cancel()  # as Service.serve does on SIGTERM
        go_on.set()
        (stopped,) = await asyncio.gather(running, return_exceptions=True)
        assert isinstance(stopped, asyncio.CancelledError), stopped
        running = None
        second = await started(db, bootstrap, "2")
        await second.publish_batch()  # the instance that goes on: what it finds unsent
        assert published_twice(values, await read_topic(bootstrap, topic)) == {}
        assert await unsent(db) == 0
    finally:
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        await first.stop()
        if second is not None:
            await second.stop()


async def test_a_batch_one_relay_holds_is_not_taken_by_another_relay(
    infrastructure: system.Infrastructure,
    db: Database,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two instances' relays of one service: while one holds a batch Kafka has answered, its
    marks not committed yet, the other's batch takes none of its rows (the schema's lock:
    :data:`LOCKED`); once the first commits, nothing is left for the second. Each row is on
    the topic once."""
    bootstrap = infrastructure.kafka_bootstrap
    values = await with_rows(db, topic)
    first = await started(db, bootstrap, "1")
    second = await started(db, bootstrap, "2")
    holding: asyncio.Task[int] | None = None
    taking: asyncio.Task[int] | None = None
    try:
        answered, go_on = held_once_answered(first, monkeypatch)
        holding = asyncio.create_task(first.publish_batch())
        await asyncio.wait_for(answered.wait(), 30)
        holder = await batch_holder(db)
        taking = asyncio.create_task(second.publish_batch())

        # Its batch ends (the schema's lock refused), or waits for a lock on the first's rows.
        await until(
            functools.partial(ended_or_waiting, taking, db, holder),
            f"the second relay's batch to end or to wait for a lock session {holder} holds",
        )
        go_on.set()
        assert await holding == ROWS
        took = await taking
        assert await second.publish_batch() == 0
        assert published_twice(values, await read_topic(bootstrap, topic)) == {}
        assert took == LOCKED
    finally:
        left = [t for t in (holding, taking) if t is not None and not t.done()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await first.stop()
        await second.stop()


async def test_rows_kafka_took_after_one_that_failed_are_marked_sent_and_not_sent_again(
    infrastructure: system.Infrastructure, db: Database
) -> None:
    """Session 50's drill: after a broker's restart, a batch met a failure on one partition
    (an out-of-order sequence), and the relay marked sent only the rows before it; those
    after it, which Kafka had acknowledged on other partitions, were sent again (146 events
    published twice). Here the batch's first row is one the broker refuses (larger than its
    topic takes: the rows of its producer batch are sent again one at a time, as rows whose
    failure may pass are sent again), the rows after it, of other keys, go to another topic,
    which takes them: they are marked sent, and on that topic once; the first is set aside
    by the next batch."""
    bootstrap = infrastructure.kafka_bootstrap
    names = await topics_with(bootstrap, small={"max.message.bytes": "2000"}, plenty={})
    batch = [
        (names["small"], b"order-1", b"x" * 3000),
        (names["plenty"], b"order-2", b"after-1"),
        (names["plenty"], b"order-3", b"after-2"),
    ]
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(outbox), [{"topic": t, "key": k, "value": v} for t, k, v in batch]
        )
    relay = await started(db, bootstrap, "1")
    try:
        assert await relay.publish_batch() == 2
        assert await relay.publish_batch() == 1  # the refused row alone: set aside
        assert await relay.publish_batch() == 0
        async with db.engine.connect() as conn:
            query = select(outbox.c.sent_at.is_not(None), outbox.c.refused_at.is_not(None))
            marked = [tuple(row) for row in await conn.execute(query.order_by(outbox.c.id))]
        assert marked == [(False, True), (True, False), (True, False)]
        assert await read_topic(bootstrap, names["plenty"]) == [b"after-1", b"after-2"]
    finally:
        await relay.stop()
