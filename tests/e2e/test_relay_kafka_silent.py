"""The outbox relay's wait for Kafka's answers (shared/messaging/relay.py): a Kafka that
takes the requests and never answers (a broker frozen, a connection whose far end is gone
with no reset) held the relay's batch without end, aiokafka's idempotent producer never
giving up a batch whose leader it knows; PostgreSQL ended the batch's transaction left idle
after ``CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS``, and the relay, once Kafka
answered, said it had lost the connection to PostgreSQL. The wait is now bounded by
``RELAY_KAFKA_WAIT_SECONDS``: Kafka away, said so, the rows left unsent and sent once Kafka
answers. So is the stop of a producer the relay replaces (after a refused batch), by
``STOP_SECONDS``: it waited for such a Kafka for ever, and the relay with it."""

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import pytest
from sqlalchemy import MetaData, Table, func, select

from caravan.infra.kafka import LocalKafka
from caravan.system import Infrastructure
from shared.db import Database
from shared.messaging import relay as relay_module
from shared.messaging.admin import ensure_topics
from shared.messaging.relay import (
    CLOSE_SECONDS,
    KAFKA_AWAY,
    STOP_SECONDS,
    OutboxRelay,
    make_producer,
)
from shared.messaging.tables import add_messaging_tables
from shared.settings import Settings
from shared.topics import Topic
from tests.conftest import own_port
from tests.e2e.test_relay_stop import is_closed
from tests.harness import Heard, freeze, scratch_database, until

OWN_KAFKA_PORT = own_port("kafka", __name__)  # a broker of the test's own, to freeze
TOPIC = Topic.ORDER_EVENTS.value
WAIT_SECONDS = 5.0  # the relay's bound, shortened for the test (30 s in the services)


@pytest.fixture
async def database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    async with scratch_database(infrastructure.database_url, "caravan_silent") as url:
        yield url


@dataclass
class Frozen:
    """A relay whose producer has sent a record to a broker of the test's own (the
    partition's leader known), which is then frozen (SIGSTOP: its kernel takes the bytes,
    nobody answers); ``thaw()`` lets it answer again."""

    relay: OutboxRelay
    db: Database
    outbox: Table
    pid: int | None = None

    def thaw(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
            self.pid = None

    async def unsent(self) -> int:
        unsent = (
            select(func.count()).select_from(self.outbox).where(self.outbox.c.sent_at.is_(None))
        )
        async with self.db.engine.connect() as conn:
            return int(await conn.scalar(unsent) or 0)


@pytest.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalKafka]:
    """The module's own broker, its topics made: each test freezes it and thaws it again,
    and it answers again before the test ends (its row sent), so the next finds it serving
    (one broker's start, not one a test)."""
    kafka = LocalKafka(tmp_path_factory.mktemp("silent") / "kafka", first_port=OWN_KAFKA_PORT)
    bootstrap = await asyncio.to_thread(kafka.start)
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await ensure_topics(bootstrap, partitions=1)
        yield kafka
    finally:
        await asyncio.to_thread(kafka.stop)


@pytest.fixture
async def frozen(
    broker: LocalKafka, database: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Frozen]:
    monkeypatch.setattr(relay_module, "RELAY_KAFKA_WAIT_SECONDS", WAIT_SECONDS)
    metadata = MetaData(schema="orders")
    outbox, _ = add_messaging_tables(metadata)
    db = Database(Settings(database_url=database), "orders")
    kafka, bootstrap = broker, broker.bootstrap_servers
    relay: OutboxRelay | None = None
    try:
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("create schema orders")
            await conn.run_sync(metadata.create_all)
        relay = OutboxRelay(
            db, outbox, functools.partial(make_producer, bootstrap, "silent"), service="orders"
        )
        await relay.producer.start()
        await relay.producer.send_and_wait(TOPIC, b"before")  # the leader known
        held = Frozen(relay, db, outbox, kafka.pid(0))
        assert held.pid is not None
        await freeze(held.pid)
        try:
            yield held
        finally:
            held.thaw()
    finally:
        if relay is not None:
            await relay.stop()
        await db.dispose()


@asynccontextmanager
async def kafka_away_said(
    frozen: Frozen, caplog: pytest.LogCaptureFixture, bound: float
) -> AsyncIterator[tuple[float, list[str]]]:
    """A row put in the outbox and the relay run, until it says Kafka away (within ``bound``
    seconds): how long that took, and what the relay said. Then the broker thawed, the row
    goes out."""
    async with frozen.db.engine.begin() as conn:
        await conn.execute(frozen.outbox.insert().values(topic=TOPIC, value=b"held"))
    caplog.set_level(logging.WARNING, logger=relay_module.__name__)
    handler = Heard(KAFKA_AWAY)
    logger = logging.getLogger(relay_module.__name__)
    logger.addHandler(handler)
    began = time.monotonic()
    running = asyncio.create_task(frozen.relay.run())
    try:
        with suppress(TimeoutError):
            await asyncio.wait_for(handler.said.wait(), bound)
        took = time.monotonic() - began
        assert handler.said.is_set(), f"nothing said of Kafka in {took:.0f} s"
        yield took, [r.getMessage() for r in caplog.records if r.name == relay_module.__name__]
        assert await frozen.unsent() == 1
        frozen.thaw()
        await until(
            frozen.unsent, "the row sent once Kafka answers", ready=lambda n: n == 0, timeout=60
        )
    finally:
        logger.removeHandler(handler)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_kafka_that_never_answers_is_kafka_away_within_the_relay_s_bound(
    frozen: Frozen, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker frozen after the relay's producer learnt the partition's leader: the
    relay's batch fails as Kafka away within its bound (a warning naming Kafka, nothing said
    of PostgreSQL), the row stays unsent; the broker thawed, the row goes out."""
    async with kafka_away_said(frozen, caplog, WAIT_SECONDS + 20) as (took, words):
        assert WAIT_SECONDS - 1 < took < WAIT_SECONDS + 5, took
        assert not [w for w in words if "PostgreSQL" in w], words
        assert "no answer from Kafka within 5 s" in words[0], words


async def test_a_producer_replaced_while_kafka_never_answers_is_closed_after_stop_seconds(
    frozen: Frozen, caplog: pytest.LogCaptureFixture
) -> None:
    """After the broker refused a batch, the relay replaces its producer, the old one given
    its stop to deliver what it holds: a Kafka that never answers held that stop, and with
    it the relay, for ever, saying nothing. Now the old producer is closed after
    ``STOP_SECONDS``, said as Kafka away, and the relay goes on: the broker thawed, the row
    goes out."""
    old = frozen.relay.producer
    await old.send(TOPIC, b"held by the old producer")
    frozen.relay._producer_stale = True  # as after a refused batch
    async with kafka_away_said(frozen, caplog, STOP_SECONDS + CLOSE_SECONDS + 10) as (took, words):
        assert STOP_SECONDS - 1 < took < STOP_SECONDS + CLOSE_SECONDS + 5, took
        assert words[0] == (
            "orders: the outbox relay's old producer did not deliver what it held within 5 s,"
            " and was closed (Kafka away); those rows stay unsent, sent again"
        ), words
        assert is_closed(old) and frozen.relay.producer is not old
