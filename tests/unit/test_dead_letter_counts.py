"""Dead letters are counted once they are committed, and a record dead-lettered before (a
replay) is a duplicate, not a second dead letter; a record whose handler asyncpg refuses
for good is dead-lettered, not retried for ever (the consumer, with a unit of work that
fakes the database's answers)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from shared.events.envelope import new_event
from shared.events.inventory import StockSold
from shared.events.registry import Parsed
from shared.messaging.consumer import (
    DEAD_LETTER_LIMIT,
    HEADERS_DROPPED,
    LETTER_REDRIVEN_FROM,
    REDRIVEN_FROM,
    VALUE_DROPPED,
    Consumer,
    Subscription,
)
from shared.topics import EventType, Topic
from tests.unit.test_transient_faults import as_the_dialect_raises


class FakeTx:
    def __init__(self, claimed: bool, emitted: list[dict[str, str]]) -> None:
        self.claimed = claimed
        self.emitted = emitted
        self.committed: list[Callable[[], None]] = []

    async def claim(self, key: str, topic: str) -> bool:
        return self.claimed

    async def emit_raw(self, topic: Any, key: Any, value: Any, headers: dict[str, str]) -> None:
        self.emitted.append(headers)

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.committed.append(callback)


class FakeUow:
    """Claims as told; the first ``failed_commits`` commits fail (a connection lost). What a
    transaction counts is counted once it commits, as by ``UnitOfWork``."""

    def __init__(self, claimed: bool, failed_commits: int = 0) -> None:
        self.claimed = claimed
        self.failed_commits = failed_commits
        self.emitted: list[dict[str, str]] = []

    @asynccontextmanager
    async def begin(self, cause: Any = None) -> AsyncIterator[FakeTx]:
        tx = FakeTx(self.claimed, self.emitted)
        yield tx
        if self.failed_commits:
            self.failed_commits -= 1
            raise ConnectionResetError("the commit's connection was lost")
        for done in tx.committed:
            done()


async def _never(*_: Any) -> None:
    raise AssertionError("a record that is not JSON is not handled")


def consumer(uow: FakeUow, service: str) -> Consumer:
    found = Consumer(service, f"caravan-{service}", uow, 3, 1, 1, 1, 1)  # type: ignore[arg-type]
    found.register(Subscription(Topic.ORDER_REQUESTS, {EventType.ORDER_REQUESTED: _never}))
    return found


def record() -> ConsumerRecord:
    topic = Topic.ORDER_REQUESTS.value
    return ConsumerRecord(topic, 0, 7, 0, 0, b"k", b"not json", None, 1, 8, [])


TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def counted(service: str) -> tuple[float, float, float]:
    labels = {"service": service, "topic": Topic.ORDER_REQUESTS.value}
    consumed = "caravan_records_consumed_total"
    return (
        REGISTRY.get_sample_value(consumed, {**labels, "outcome": "dead_lettered"}) or 0,
        REGISTRY.get_sample_value(consumed, {**labels, "outcome": "duplicate"}) or 0,
        REGISTRY.get_sample_value("caravan_dead_letters_total", {**labels, "error": "not_json"})
        or 0,
    )


async def test_a_dead_letter_is_counted_once_though_its_commit_was_tried_twice() -> None:
    await consumer(FakeUow(claimed=True, failed_commits=1), "t-dlq-once").dispatch(record())
    assert counted("t-dlq-once") == (1, 0, 1)


async def test_a_record_dead_lettered_before_is_a_duplicate() -> None:
    await consumer(FakeUow(claimed=False), "t-dlq-replayed").dispatch(record())
    assert counted("t-dlq-replayed") == (0, 1, 0)


async def test_a_record_whose_statement_asyncpg_refuses_is_dead_lettered_with_its_reason() -> None:
    """asyncpg refuses a statement of more than 32,767 parameters as an ``InterfaceError``,
    as it says a connection is closed; it was retried as transient, without end, and the
    partition stalled behind the record."""
    tried = 0

    async def too_many_parameters(tx: Any, parsed: Parsed) -> None:
        nonlocal tried
        tried += 1
        refused = asyncpg.InterfaceError("the number of query arguments cannot exceed 32767")
        raise as_the_dialect_raises(refused)

    uow = FakeUow(claimed=True)
    found = Consumer("t-refused", "caravan-t-refused", uow, 3, 1, 1, 1, 1)  # type: ignore[arg-type]
    found.register(
        Subscription(Topic.INVENTORY_EVENTS, {EventType.STOCK_SOLD: too_many_parameters})
    )
    value = new_event(StockSold(order_id="o-refused"), source="caravan/inventory").to_json()
    topic = Topic.INVENTORY_EVENTS.value
    await asyncio.wait_for(
        found.dispatch(ConsumerRecord(topic, 0, 9, 0, 0, b"k", value, None, 1, len(value), [])),
        10,
    )
    assert tried == 3
    [headers] = uow.emitted
    assert headers["dlq.error"] == "handler_error"
    assert "cannot exceed 32767" in headers["dlq.error.message"]


async def test_a_letter_that_fails_for_good_is_written_bare_and_the_consumer_moves_on() -> None:
    """Every failure of dead-lettering was retried, whatever it was: one that comes back at
    every try (a value PostgreSQL cannot store, a bug of ``on_poison``) stalled the consumer
    on every topic of its service. Such a letter is written with the fixed headers alone."""
    answered = 0

    async def broken_answer(tx: Any, poison: Any) -> None:
        nonlocal answered
        answered += 1
        raise ValueError("a bug of the answer")

    uow = FakeUow(claimed=True)
    found = Consumer("t-bare", "caravan-t-bare", uow, 3, 1, 1, 1, 1)  # type: ignore[arg-type]
    topic = Topic.ORDER_REQUESTS
    found.register(Subscription(topic, {EventType.ORDER_REQUESTED: _never}, broken_answer))
    headers = [(REDRIVEN_FROM, b"orders.requests.v1.dlq:0:1"), ("traceparent", TRACEPARENT)]
    record = ConsumerRecord(topic.value, 0, 7, 0, 0, b"k", b"not json", None, 1, 8, headers)
    await asyncio.wait_for(found.dispatch(record), 5)
    assert answered == 1
    *_, letter = uow.emitted
    assert [h for h in letter if not h.startswith("dlq.")] == []
    assert LETTER_REDRIVEN_FROM not in letter
    assert letter["dlq.error"] == "not_json"
    assert letter[HEADERS_DROPPED].startswith("every header of the record")
    assert "ValueError: a bug of the answer" in letter[HEADERS_DROPPED]


async def test_a_dead_letters_headers_count_against_its_limit() -> None:
    uow = FakeUow(claimed=True)
    value = b"\xff" * (DEAD_LETTER_LIMIT - 10)
    topic = Topic.ORDER_REQUESTS.value
    await consumer(uow, "t-dlq-limit").dispatch(
        ConsumerRecord(topic, 0, 7, 0, 0, b"k", value, None, 1, len(value), [])
    )
    [letter] = uow.emitted
    assert letter[VALUE_DROPPED].startswith(f"{len(value)} bytes")
