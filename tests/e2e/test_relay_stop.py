"""The outbox relay's stop while Kafka is away (shared/messaging/relay.py): a service asked to
stop then hung until Kafka came back, its producer waiting without end to deliver what it
held; a supervisor would have killed it. It now stops within ``STOP_SECONDS``, and closes the
producers it gave up on: they went on trying the stopped broker in the background (a
service's process exits after its stop; the test session's went on, and their retries' log
lines reached later tests), the one it was replacing too, and leaves none of their tasks
pending: the garbage collector, destroying one, said "Task was destroyed but it is pending!
... MessageAccumulator.close()" (CI4, in a later test)."""

import asyncio
import functools
import gc
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import Column, Integer, MetaData, Table

from caravan.infra.kafka import LocalKafka
from shared.db import Database
from shared.messaging.admin import ensure_topics
from shared.messaging.relay import STOP_SECONDS, OutboxRelay, make_producer
from shared.topics import Topic
from tests.conftest import own_port

OWN_KAFKA_PORT = own_port("kafka", __name__)  # a broker of the test's own, to stop
TOPIC = Topic.ORDER_EVENTS.value


@pytest.fixture(autouse=True)
def aiokafka_unrecorded(caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka's lines (each try of the stopped broker) not recorded: their records hold its
    errors, and through them the producers, which the garbage collector then keeps."""
    caplog.set_level(logging.CRITICAL, logger="aiokafka")


@pytest.fixture(scope="module")
def kafka_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's broker keeps its data: each test starts it and stops it, the
    second on the storage the first formatted (one format, its offsets topic made once)."""
    return tmp_path_factory.mktemp("relay-stop") / "kafka"


async def relay_holding_a_record(home: Path) -> tuple[OutboxRelay, asyncio.Future[Any]]:
    """A relay whose producer was started on a broker, the broker then stopped, and a record
    sent (held, undelivered)."""
    kafka = LocalKafka(home, first_port=OWN_KAFKA_PORT)
    bootstrap = await asyncio.to_thread(kafka.start)
    try:
        await asyncio.to_thread(kafka.wait_ready)
        outbox = Table("outbox", MetaData(schema="orders"), Column("id", Integer))
        db = cast(Database, SimpleNamespace(schema="orders"))
        factory = functools.partial(make_producer, bootstrap, "stop")
        relay = OutboxRelay(db, outbox, factory, service="orders")
        await relay.producer.start()
        await ensure_topics(bootstrap, partitions=1)
        await relay.producer.send_and_wait(TOPIC, b"before")
    finally:
        await asyncio.to_thread(kafka.stop)
    return relay, await relay.producer.send(TOPIC, b"held")


def is_closed(producer: AIOKafkaProducer) -> bool:
    """Whether ``producer`` tries Kafka no more: its sender's task ended, its connections
    closed."""
    sender = producer._sender.sender_task
    connected = [conn for conn in producer.client._conns.values() if conn.connected()]
    return (sender is None or sender.done()) and not connected


async def stopped(relay: OutboxRelay, caplog: pytest.LogCaptureFixture) -> float:
    """The relay's stop, in seconds; it says once that it gave up."""
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="shared.messaging.relay"):
        await asyncio.wait_for(relay.stop(), 60)
    took = time.monotonic() - began
    said = [r.getMessage() for r in caplog.records if r.name == "shared.messaging.relay"]
    assert len(said) == 1 and "those rows stay unsent" in said[0], said
    return took


def no_task_destroyed_pending(caplog: pytest.LogCaptureFixture) -> None:
    """The producers the test let go of collected, asyncio says of none of their tasks that
    it was destroyed pending."""
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()
    destroyed = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not destroyed, destroyed


async def test_the_relay_stops_in_bounded_time_while_kafka_is_away(
    kafka_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay's stop returns within ``STOP_SECONDS`` and a little, with one warning, its
    producer closed, none of its tasks left pending."""
    relay, held = await relay_holding_a_record(kafka_home)
    took = await stopped(relay, caplog)
    assert took < STOP_SECONDS + 2, took
    assert not held.done() or held.exception() is not None
    assert is_closed(relay.producer)
    del relay, held
    no_task_destroyed_pending(caplog)


async def test_a_producer_being_replaced_while_kafka_is_away_is_closed_by_the_stop(
    kafka_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay replacing its producer (after a refused batch) when its service stops: the
    old producer's stop, waiting for Kafka, is given up on after ``STOP_SECONDS``, and both
    producers are closed, none of their tasks left pending."""
    relay, _ = await relay_holding_a_record(kafka_home)
    old = relay.producer
    renewal = asyncio.create_task(relay._renew_producer())
    await asyncio.sleep(0.5)  # the old producer's stop begun, waiting for Kafka
    assert not renewal.done()
    renewal.cancel()  # the service stopping: its relay's task cancelled
    with pytest.raises(asyncio.CancelledError):
        await renewal
    took = await stopped(relay, caplog)
    assert took < STOP_SECONDS + 2, took
    assert relay.producer is not old
    assert is_closed(old) and is_closed(relay.producer)
    del relay, old, renewal
    no_task_destroyed_pending(caplog)
