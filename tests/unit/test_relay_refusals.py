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
from shared.messaging import relay as relay_module
from shared.messaging.relay import KAFKA_SETTLES, OutboxRelay, check_topic, refused_for_good
from tests.unit.conftest import Clock, said


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


async def test_kafka_away_or_restarted_is_a_warning_and_a_refused_authorization_an_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[Exception] = [
        errors.KafkaTimeoutError(),  # a record not sent in time: its leader away
        errors.KafkaConnectionError("Unable to bootstrap"),
        errors.NotLeaderForPartitionError(),
        errors.RequestTimedOutError(),
        # After a broker's restart (session 50's drill: an error with its traceback): the
        # relay's new producer numbers afresh.
        errors.OutOfOrderSequenceNumber(),
        errors.TopicAuthorizationFailedError(),  # not granted: operations must act
    ]
    tried_all = asyncio.Event()

    async def publish_batch() -> int:
        if not failures:
            tried_all.set()
            return 0  # nothing to publish: the relay waits to be woken, where it is cancelled
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
    lines = [r for r in caplog.records if r.name == "shared.messaging.relay"]  # its own
    said = [(r.levelname, r.exc_info is not None, r.getMessage()) for r in lines]
    assert [(level, traced) for level, traced, _ in said] == [("WARNING", False)] * 5 + [
        ("ERROR", True)
    ], said
    assert "KafkaTimeoutError" in said[0][2]
    assert said[4][2] == (
        "outbox relay failed; Kafka lost the producer's sequence (a broker restarted?),"
        f" retrying with a new one: {errors.OutOfOrderSequenceNumber()!r}"
    )


async def test_a_kafka_outage_is_one_warning_then_a_line_when_the_relay_publishes_again(
    caplog: pytest.LogCaptureFixture, faults: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka away, the relay's warning is one (then one a minute), as PostgreSQL's is; but
    its end said nothing (PostgreSQL's and the payment gateway's are a line): now the first
    batch Kafka answers says it, a round with nothing to publish (Kafka not asked) does not,
    and the next outage is said at once. Kafka away again within 10 s of its answer (a broker
    back from a restart, still loading its partitions and groups) is the same outage going
    on: a drill's broker down 45 s was said answering again "32 s after it was first found
    away", then "2 s after" and "1 s after" as such blips each ended. Its end is said once
    in those 10 s (a short restart's was said three times in 213 ms by one process), and
    again, from its first line, if it goes on longer."""
    away = errors.KafkaConnectionError("Unable to bootstrap")
    later = KAFKA_SETTLES  # a round with nothing to publish, that long after the one before
    answers: list[int | float | Exception] = [away] * 20 + [0, away, 3, away, 3]
    answers += [away] * 10 + [3, later, away]  # going on 10 s past the end said, then over
    tried_all = asyncio.Event()

    async def publish_batch() -> int:
        if not answers:
            tried_all.set()
            return 0
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            faults.now += 1
            raise answer
        if isinstance(answer, float):
            faults.now += answer
            return 0
        return answer

    relay = OutboxRelay(
        cast(Database, SimpleNamespace(schema="orders")),
        Table("outbox", MetaData(schema="orders"), Column("id", Integer)),
        cast(Callable[[], AIOKafkaProducer], object),
        service="orders",
        idle_poll_seconds=0.01,
    )
    monkeypatch.setattr(relay, "publish_batch", publish_batch)
    monkeypatch.setattr(relay_module, "exponential_step", lambda *_, **__: 0.0)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(tried_all.wait(), 10)
    finally:
        task.cancel()
    warned = f"outbox relay failed; Kafka away, retrying: {away!r}"
    assert said(caplog, "shared.messaging.relay") == [
        ("WARNING", warned),
        (
            "INFO",
            "Kafka answers again, 20 s after it was first found away"
            " (20 warnings of it not logged since the last that was)",
        ),
        (
            "INFO",
            "Kafka answers again, 31 s after it was first found away"
            " (11 warnings of it not logged since the last that was)",
        ),
        ("WARNING", warned),
    ]
