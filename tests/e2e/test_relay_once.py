"""The outbox relay sends a row once across a graceful stop and two instances of a service
(shared/messaging/relay.py), on real Kafka and PostgreSQL. In a rolling restart under load
(session 48's drill), events were published twice: a service asked to stop (SIGTERM)
cancelled its relay (``Service.serve``) while the batch Kafka had taken waited to commit
its marks, which rolled back; the producer's stop delivered what it held, and the other
instance's relay took the rows, unsent, and sent them again. The relay now lets the batch
under way commit its marks before it lets go."""

import asyncio
import functools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from caravan import system
from services.orders.adapters.tables import outbox
from shared.db import Database
from shared.messaging.relay import OutboxRelay, make_producer
from tests.e2e.test_messaging_retention import orders_tables, topics_with
from tests.e2e.test_outbox_relay import read_topic

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
