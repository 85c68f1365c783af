"""Which failures the outbox relay takes for Kafka refusing a row for good (the row is set
aside, the relay goes on) and which may pass (retried, the rows after it wait); and which
of these are Kafka away or busy, logged as a one-line warning, not an error."""

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import cast

import pytest
from aiokafka import AIOKafkaProducer, errors
from sqlalchemy import Column, Integer, MetaData, Table

from shared.db import Database
from shared.messaging.relay import OutboxRelay, check_topic, refused_for_good


@pytest.mark.parametrize(
    "exc",
    [
        errors.MessageSizeTooLargeError("larger than max_request_size"),
        errors.MessageSizeTooLargeError(),  # the broker's answer, over max.message.bytes
        errors.RecordListTooLargeError(),
        errors.InvalidTopicError(),
    ],
)
def test_a_record_kafka_refuses_is_refused_for_good(exc: BaseException) -> None:
    assert refused_for_good(exc)


@pytest.mark.parametrize(
    "exc",
    [
        errors.KafkaConnectionError(),  # the broker away
        errors.NoBrokersAvailable(),
        errors.LeaderNotAvailableError(),  # a leader moving
        errors.NotLeaderForPartitionError(),
        errors.NotEnoughReplicasError(),
        errors.NotEnoughReplicasAfterAppendError(),
        errors.RequestTimedOutError(),
        errors.KafkaTimeoutError(),  # not retriable in aiokafka's sense, yet it passes
        errors.UnknownTopicOrPartitionError(),  # a topic operations have yet to create
        errors.TopicAuthorizationFailedError(),  # operations may grant it
        errors.ClusterAuthorizationFailedError(),
        errors.OutOfOrderSequenceNumber(),  # a new producer starts afresh
        ConnectionResetError(),
    ],
)
def test_a_failure_that_may_pass_is_not(exc: BaseException) -> None:
    assert not refused_for_good(exc)


@pytest.mark.parametrize("name", ["orders.events.v1", "a", "A_b-c.9", "x" * 249, "..."])
def test_a_valid_topic_name_passes(name: str) -> None:
    check_topic(name)


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 250, "not a topic!", "orders/events", "é"])
def test_a_topic_name_kafka_rejects_is_an_invalid_topic(name: str) -> None:
    with pytest.raises(errors.InvalidTopicError) as raised:
        check_topic(name)
    assert refused_for_good(raised.value)


async def test_kafka_away_is_a_warning_and_a_refused_authorization_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[Exception] = [
        errors.KafkaTimeoutError(),  # a record not sent in time: its leader away
        errors.KafkaConnectionError("Unable to bootstrap"),
        errors.NotLeaderForPartitionError(),
        errors.RequestTimedOutError(),
        errors.TopicAuthorizationFailedError(),  # not granted: operations must act
    ]
    tried_all = asyncio.Event()

    async def publish_batch() -> int:
        if not failures:
            tried_all.set()
            await asyncio.Event().wait()
        raise failures.pop(0)

    outbox = Table("outbox", MetaData(schema="orders"), Column("id", Integer))
    db = cast(Database, SimpleNamespace(schema="orders"))
    relay = OutboxRelay(db, outbox, cast(Callable[[], AIOKafkaProducer], object), service="orders")
    monkeypatch.setattr(relay, "publish_batch", publish_batch)
    with caplog.at_level(logging.INFO, logger="shared.messaging.relay"):
        task = asyncio.create_task(relay.run())
        try:
            await asyncio.wait_for(tried_all.wait(), 10)
        finally:
            task.cancel()
    said = [(r.levelname, r.exc_info is not None, r.getMessage()) for r in caplog.records]
    assert [(level, traced) for level, traced, _ in said] == [("WARNING", False)] * 4 + [
        ("ERROR", True)
    ], said
    assert "KafkaTimeoutError" in said[0][2]
