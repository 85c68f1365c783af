"""Which rows of a batch the outbox relay marks sent once Kafka has answered
(shared/messaging/relay.py): after a broker's restart (session 50's drill), a batch met an
out-of-order sequence on one partition, and the relay marked sent only the rows before it;
those after it that Kafka had acknowledged on other partitions were sent again, 146 events
published twice. Now a row stays unsent only if it was not sent, its failure may pass, or
an earlier row of its key on its topic stays unsent (a key goes to one partition: the
order per key is kept). And Kafka's late answer to a row the relay no longer waits for is
retrieved: asyncio logged it as an error with its traceback."""

import asyncio
import gc
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer, errors
from sqlalchemy import Column, Integer, MetaData, Table

from shared.db import Database
from shared.messaging import relay as relay_module
from shared.messaging.relay import OutboxRelay, RefusedWithOthers, _left_unsent

TOPIC = "orders.events.v1"
SEQUENCE = errors.OutOfOrderSequenceNumber()  # a failure that may pass
TOO_LARGE = errors.MessageSizeTooLargeError()  # a refusal for good: set aside


def rows(*keys: bytes | tuple[str, bytes] | None) -> list[dict[str, Any]]:
    """Outbox rows in order, each of a key (on TOPIC) or of a topic and a key."""
    return [
        {"id": i, "topic": k[0], "key": k[1]}
        if isinstance(k, tuple)
        else {"id": i, "topic": TOPIC, "key": k}
        for i, k in enumerate(keys, 1)
    ]


def test_rows_acknowledged_after_a_failure_of_another_key_are_marked_sent() -> None:
    """The drill's batch: the rows of the key whose partition met an out-of-order sequence
    stay unsent, from that row on; those of other keys, before and after it, are marked."""
    batch = rows(b"a", b"b", b"c", b"b", b"d")
    answers = [None, SEQUENCE, None, None, None]
    assert _left_unsent(batch, answers) == [False, True, False, True, False]


def test_rows_not_sent_stay_unsent_and_hold_their_keys() -> None:
    """A row that could not be sent ends the sending: the rows after it have no answer."""
    batch = rows(b"a", b"b", b"a", b"c")
    assert _left_unsent(batch, [None, errors.KafkaTimeoutError()]) == [False, True, True, True]


def test_a_row_set_aside_does_not_hold_its_key_but_one_of_a_key_held_stays() -> None:
    """Refused for good, a row is set aside, and the rows after it of its key go on; but one
    after a row of its key left unsent stays unsent too (set aside by a later batch)."""
    batch = rows(b"a", b"a", b"b", b"b")
    answers = [TOO_LARGE, None, SEQUENCE, TOO_LARGE]
    assert _left_unsent(batch, answers) == [False, False, True, True]


def test_a_batch_refused_with_others_holds_its_keys_for_the_rows_sent_one_at_a_time() -> None:
    batch = rows(b"a", b"b", b"a", b"c")
    refused = RefusedWithOthers(TOO_LARGE)
    assert _left_unsent(batch, [refused, refused, None, None]) == [True, True, True, False]


def test_a_key_is_held_on_its_topic_and_rows_without_a_key_as_one() -> None:
    batch = rows((TOPIC, b"a"), ("other", b"a"), None, None, (TOPIC, b"a"))
    answers = [SEQUENCE, None, SEQUENCE, None, None]
    assert _left_unsent(batch, answers) == [True, False, True, True, True]


class Holding:
    """A producer that takes every row and answers none until the test says."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def relay_of(producer: object) -> OutboxRelay:
    return OutboxRelay(
        cast(Database, SimpleNamespace(schema="orders")),
        Table("outbox", MetaData(schema="orders"), Column("id", Integer)),
        cast(Callable[[], AIOKafkaProducer], lambda: producer),
        service="orders",
    )


async def test_kafka_s_late_failure_of_a_row_no_longer_waited_for_is_retrieved(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer by the batch's deadline, the row stays unsent (Kafka away); the producer's
    failure of it later (its batch expired, no leader: a broker restarting) was an error
    from asyncio, 'Future exception was never retrieved', with a traceback."""
    monkeypatch.setattr(relay_module, "RELAY_KAFKA_WAIT_SECONDS", 0.05)
    producer = Holding()
    relay = relay_of(producer)
    row = {"id": 1, "topic": TOPIC, "key": b"a", "value": b"{}", "headers": {}}
    (answer,) = await relay._publish([row])
    assert isinstance(answer, errors.KafkaTimeoutError), answer
    caplog.set_level(logging.WARNING)
    producer.futures.pop().set_exception(errors.LeaderNotAvailableError())
    await asyncio.sleep(0)  # its callbacks run
    gc.collect()  # an error no one retrieved is logged as its future is collected
    assert [(r.name, r.getMessage()) for r in caplog.records] == []


class Stuck(Holding):
    """A producer whose send of a row to ``stuck`` waits without end (no metadata of its
    topic, its buffer full): Kafka answers the others at once."""

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        if topic == "stuck":
            await asyncio.Event().wait()
        future = await super().send(topic)
        future.set_result(None)
        return future


async def test_a_send_not_done_by_the_batch_s_deadline_is_kafka_away_and_ends_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sends of a batch are bounded by its deadline, as its answers are: the row whose
    send does not return by then fails as Kafka away (it stays unsent), those before it keep
    their answers (marked sent), and those after it are not sent."""
    monkeypatch.setattr(relay_module, "RELAY_KAFKA_WAIT_SECONDS", 0.05)
    producer = Stuck()
    batch = [
        {"id": i, "topic": topic, "key": b"a", "value": b"{}", "headers": {}}
        for i, topic in enumerate((TOPIC, TOPIC, "stuck", TOPIC), 1)
    ]
    answers = await relay_of(producer)._publish(batch)
    assert answers[:2] == [None, None]
    assert len(answers) == 3 and isinstance(answers[2], errors.KafkaTimeoutError), answers
    assert len(producer.futures) == 2  # the row after it not sent
