"""A Kafka client whose start is cancelled is closed all the same. A service stopped in its
first seconds cancelled its lag sampler and its retention loop while their clients were
connecting, and asyncio logged "Unclosed AIOKafkaConsumer" and "Unclosed AIOKafkaConnection"
at the error level as the process ended (seen in CI's service logs).

The start is made to hang (nothing listens on the address given), so the cancellation lands
inside it, as it did in those services.

So is the producer the outbox relay replaces (after a refused batch) when the service stops
while it is being stopped: its own stop, once begun, returns at once."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Column, Integer, MetaData, Table

from caravan.ops import record
from caravan.ops.dlq import DeadLetter, redrive
from shared.db import Database
from shared.messaging import kafka_admin
from shared.messaging.relay import OutboxRelay

NOWHERE = "127.0.0.1:9"


async def cancelled_while_starting(
    monkeypatch: pytest.MonkeyPatch, client_class: type[Any], use: Any
) -> Any:
    """Run ``use()`` until ``client_class``'s start has begun, cancel it, and return the
    client it made."""
    made: list[Any] = []
    starting = asyncio.Event()

    async def start(self: Any) -> None:
        made.append(self)
        starting.set()
        await asyncio.Event().wait()  # a start that never finishes

    monkeypatch.setattr(client_class, "start", start)
    task = asyncio.create_task(use())
    await asyncio.wait_for(starting.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(made) == 1
    return made[0]


async def use_group_client() -> None:
    async with kafka_admin.group_client(NOWHERE, "caravan-test"):
        raise AssertionError("the start never finishes")


@pytest.mark.parametrize(
    ("client_class", "use"),
    [
        (AIOKafkaConsumer, use_group_client),  # the lag sampler's; the next, retention's
        (AIOKafkaAdminClient, lambda: kafka_admin.longest_kept_hours(NOWHERE, ["t"])),
        (AIOKafkaAdminClient, lambda: kafka_admin.describe_group(NOWHERE, "caravan-test")),
    ],
    ids=["group_client", "longest_kept_hours", "describe_group"],
)
async def test_a_client_cancelled_while_starting_is_closed(
    monkeypatch: pytest.MonkeyPatch, client_class: type[Any], use: Any
) -> None:
    client = await cancelled_while_starting(monkeypatch, client_class, use)
    assert client._closed


class FakeProducer:
    """Stops as AIOKafkaProducer does: marked closed first, then its pending records flushed
    (Kafka answering) and its connections closed; a stop begun before returns at once."""

    def __init__(self, flushed: asyncio.Event) -> None:
        self.flushed = flushed
        self.stopping = asyncio.Event()
        self.connected = False

    async def start(self) -> None:
        self.connected = True

    async def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        await self.flushed.wait()
        self.connected = False


async def test_a_producer_being_replaced_when_the_service_stops_is_closed() -> None:
    flushed = asyncio.Event()
    made: list[FakeProducer] = []

    def new_producer() -> FakeProducer:
        made.append(FakeProducer(flushed))
        return made[-1]

    outbox = Table("outbox", MetaData(schema="orders"), Column("id", Integer))
    db = cast(Database, SimpleNamespace(schema="orders"))
    factory = cast(Callable[[], AIOKafkaProducer], new_producer)
    relay = OutboxRelay(db, outbox, factory, service="orders")
    await relay.producer.start()  # as its service does
    renewal = asyncio.create_task(relay._renew_producer())
    await asyncio.wait_for(made[0].stopping.wait(), 5)
    renewal.cancel()  # the service stopping: its relay's task cancelled
    with pytest.raises(asyncio.CancelledError):
        await renewal
    flushed.set()
    await relay.stop()  # as the service does once the relay's task is done
    assert [p.connected for p in made] == [False] * len(made)


async def test_a_redrive_stopped_while_its_producer_starts_closes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``caravan dlq redrive`` started its producer outside the ``try`` that stops it: one
    whose start failed (Kafka away) or was cancelled (Ctrl-C) was left open."""

    async def recordable(database_url: str | None) -> None:
        return None  # the audit trail would take it: the redrive goes on to send

    monkeypatch.setattr(record, "unrecordable", recordable)
    letter = DeadLetter("orders.requests.v1.dlq", 0, 7, datetime.now(UTC), None, b"{}", {})
    client = await cancelled_while_starting(
        monkeypatch, AIOKafkaProducer, lambda: redrive(NOWHERE, None, [letter], again=True)
    )
    assert client._closed
