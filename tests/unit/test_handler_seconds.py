"""``caravan_handler_seconds`` is the time to handle one record, its commit included: a
record handled in a batch was handled when the batch committed, so each shows the batch's
time. Each showed the batch's time divided by its size (2 s for a batch of 100 read as
20 ms a record), so the latency's p99 read low exactly under load (the consumer, with a unit
of work that fakes the database and a clock that the handlers move)."""

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from shared.events.envelope import new_event
from shared.events.inventory import StockSold
from shared.events.registry import Parsed
from shared.messaging.consumer import Consumer, Subscription
from shared.topics import EventType, Topic

SERVICE = "t-batch-latency"


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTx:
    async def claim_all(self, keys: Sequence[str], topics: Sequence[str]) -> list[bool]:
        return [True] * len(keys)

    async def flush(self) -> None: ...

    def caused_by(self, cause: Any) -> "FakeTx":
        return self


class FakeUow:
    @asynccontextmanager
    async def begin(self, cause: Any = None) -> AsyncIterator[FakeTx]:
        yield FakeTx()


def record(offset: int) -> ConsumerRecord:
    value = new_event(StockSold(order_id=f"o-{offset}"), source="caravan/inventory").to_json()
    topic = Topic.INVENTORY_EVENTS.value
    return ConsumerRecord(topic, 0, offset, 0, 0, b"k", value, None, 1, len(value), [])


def observed(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(
        f"caravan_handler_seconds_{name}",
        {"service": SERVICE, "topic": Topic.INVENTORY_EVENTS.value, **labels},
    )
    return found or 0.0


async def test_each_record_of_a_batch_shows_the_time_the_batch_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "perf_counter", clock)

    async def handle(tx: Any, parsed: Parsed) -> None:
        clock.now += 1.0  # each record takes a second: the batch of two, two

    found = Consumer(SERVICE, f"caravan-{SERVICE}", FakeUow(), 3, 10, 1, 1, 1)  # type: ignore[arg-type]
    found.register(Subscription(Topic.INVENTORY_EVENTS, {EventType.STOCK_SOLD: handle}))
    await found.dispatch_batch([record(1), record(2)])
    assert observed("count") == 2
    assert observed("sum") == 4.0
    assert observed("bucket", le="1.0") == 0  # neither was handled before the batch committed
