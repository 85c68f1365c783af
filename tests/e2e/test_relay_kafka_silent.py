"""The outbox relay's wait for Kafka's answers (shared/messaging/relay.py): a Kafka that
takes the requests and never answers (a broker frozen, a connection whose far end is gone
with no reset) held the relay's batch without end, aiokafka's idempotent producer never
giving up a batch whose leader it knows; PostgreSQL ended the batch's transaction left idle
after ``CARAVAN_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS``, and the relay, once Kafka
answered, said it had lost the connection to PostgreSQL. The wait is now bounded by
``RELAY_KAFKA_WAIT_SECONDS``: Kafka away, said so, the rows left unsent and sent once Kafka
answers."""

import asyncio
import functools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, func, select

from caravan.infra.kafka import LocalKafka
from caravan.system import Infrastructure
from shared.db import Database
from shared.messaging import relay as relay_module
from shared.messaging.admin import ensure_topics
from shared.messaging.relay import KAFKA_AWAY, OutboxRelay, make_producer
from shared.messaging.tables import add_messaging_tables
from shared.settings import Settings
from shared.topics import Topic
from tests.conftest import KAFKA_PORT
from tests.harness import Heard, scratch_database, until

OWN_KAFKA_PORT = KAFKA_PORT + 4  # a broker of the test's own, to freeze (commit test's: + 3)
TOPIC = Topic.ORDER_EVENTS.value
WAIT_SECONDS = 5.0  # the relay's bound, shortened for the test (30 s in the services)


@pytest.fixture
async def database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    async with scratch_database(infrastructure.database_url, "caravan_silent") as url:
        yield url


async def test_a_kafka_that_never_answers_is_kafka_away_within_the_relay_s_bound(
    tmp_path: Path,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker frozen (SIGSTOP: its kernel takes the bytes, nobody answers) after the
    relay's producer learnt the partition's leader: the relay's batch fails as Kafka away
    within its bound (a warning naming Kafka, nothing said of PostgreSQL), the row stays
    unsent; the broker thawed, the row goes out."""
    monkeypatch.setattr(relay_module, "RELAY_KAFKA_WAIT_SECONDS", WAIT_SECONDS)
    metadata = MetaData(schema="orders")
    outbox, _ = add_messaging_tables(metadata)
    db = Database(Settings(database_url=database), "orders")
    kafka = LocalKafka(tmp_path / "kafka", first_port=OWN_KAFKA_PORT)
    bootstrap = await asyncio.to_thread(kafka.start)
    heard = Heard(KAFKA_AWAY)
    logger = logging.getLogger(relay_module.__name__)
    relay: OutboxRelay | None = None
    running: asyncio.Task[None] | None = None
    frozen: int | None = None
    try:
        await asyncio.to_thread(kafka.wait_ready)
        await ensure_topics(bootstrap, partitions=1)
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql("create schema orders")
            await conn.run_sync(metadata.create_all)
        relay = OutboxRelay(
            db, outbox, functools.partial(make_producer, bootstrap, "silent"), service="orders"
        )
        await relay.producer.start()
        await relay.producer.send_and_wait(TOPIC, b"before")  # the leader known
        frozen = kafka._pid(kafka._nodes[0])
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        async with db.engine.begin() as conn:
            await conn.execute(outbox.insert().values(topic=TOPIC, value=b"held"))
        logger.addHandler(heard)
        caplog.set_level(logging.WARNING, logger=relay_module.__name__)
        began = time.monotonic()
        running = asyncio.create_task(relay.run())
        await asyncio.wait_for(heard.said.wait(), WAIT_SECONDS + 20)
        took = time.monotonic() - began
        assert WAIT_SECONDS - 1 < took < WAIT_SECONDS + 5, took
        words = [r.getMessage() for r in caplog.records if r.name == relay_module.__name__]
        assert not [w for w in words if "PostgreSQL" in w], words
        assert "no answer from Kafka within 5 s" in words[0], words
        unsent = select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        async with db.engine.connect() as conn:
            assert await conn.scalar(unsent) == 1
        os.kill(frozen, signal.SIGCONT)
        frozen = None

        async def left() -> int:
            async with db.engine.connect() as conn:
                return int(await conn.scalar(unsent) or 0)

        await until(left, "the row sent once Kafka answers", ready=lambda n: n == 0, timeout=60)
    finally:
        logger.removeHandler(heard)
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        if relay is not None:
            await relay.stop()
        await db.dispose()
        await asyncio.to_thread(kafka.stop)
