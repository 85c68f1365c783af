"""The outbox relay's stop while Kafka is away (shared/messaging/relay.py): a service asked to
stop then hung until Kafka came back, its producer waiting without end to deliver what it
held; a supervisor would have killed it. It now stops within ``STOP_SECONDS``."""

import asyncio
import functools
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from sqlalchemy import Column, Integer, MetaData, Table

from caravan.infra.kafka import LocalKafka
from shared.db import Database
from shared.messaging.admin import ensure_topics
from shared.messaging.relay import STOP_SECONDS, OutboxRelay, make_producer
from shared.topics import Topic
from tests.conftest import KAFKA_PORT

OWN_KAFKA_PORT = KAFKA_PORT + 2  # a broker of the test's own, to stop (test_up_command: + 1)
TOPIC = Topic.ORDER_EVENTS.value


async def test_the_relay_stops_in_bounded_time_while_kafka_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer started on a broker, the broker stopped, a record sent (held, undelivered):
    the relay's stop returns within ``STOP_SECONDS`` and a little, with one warning."""
    kafka = LocalKafka(tmp_path / "kafka", first_port=OWN_KAFKA_PORT)
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
    held = await relay.producer.send(TOPIC, b"held")
    began = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.messaging.relay"):
            await asyncio.wait_for(relay.stop(), 60)
        took = time.monotonic() - began
    finally:
        # The producer given up on keeps trying the stopped broker in the background (a
        # service's process exits after its stop; this one, the test session's, goes on, and
        # its retries' log lines reached later tests): closed here by aiokafka's own parts.
        await relay.producer._sender.close()
        await relay.producer.client.close()
    assert took < STOP_SECONDS + 2, took
    assert not held.done() or held.exception() is not None
    said = [r.getMessage() for r in caplog.records if r.name == "shared.messaging.relay"]
    assert len(said) == 1 and "those rows stay unsent" in said[0], said
