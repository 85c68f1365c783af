"""The outbox relay's last batch when its service stops (shared/messaging/relay.py): let
finish, so that its marks commit (tests/e2e/test_relay_once.py, on Kafka and PostgreSQL),
but not for ever: a batch Kafka does not answer (away) is given up after ``STOP_SECONDS``,
and the relay stops."""

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import cast

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import Column, Integer, MetaData, Table

from shared.db import Database
from shared.messaging import relay as relay_module
from shared.messaging.relay import OutboxRelay

SECONDS = 1.0  # the relay's bound, shortened for the test (5 s in the services)


def relay_batching(
    monkeypatch: pytest.MonkeyPatch, seconds: float
) -> tuple[OutboxRelay, asyncio.Event, list[str]]:
    """A relay whose batch takes ``seconds``; the event is set once it has begun, the list
    says how it ended (``done`` or ``cancelled``)."""
    relay = OutboxRelay(
        cast(Database, SimpleNamespace(schema="orders")),
        Table("outbox", MetaData(schema="orders"), Column("id", Integer)),
        cast(Callable[[], AIOKafkaProducer], object),
        service="orders",
    )
    began, ended = asyncio.Event(), []

    async def publish_batch() -> int:
        began.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise
        ended.append("done")
        return 1

    monkeypatch.setattr(relay_module, "STOP_SECONDS", SECONDS)
    monkeypatch.setattr(relay, "publish_batch", publish_batch)
    return relay, began, ended


async def stopped_in_a_batch(relay: OutboxRelay, began: asyncio.Event) -> BaseException | None:
    """Cancel ``relay``'s run once a batch has begun; how the run ended."""
    running = asyncio.create_task(relay.run())
    await asyncio.wait_for(began.wait(), 5)
    running.cancel()
    (result,) = await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 5)
    return result


async def test_a_relay_stopped_in_a_batch_lets_it_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    relay, began, ended = relay_batching(monkeypatch, SECONDS / 20)
    assert isinstance(await stopped_in_a_batch(relay, began), asyncio.CancelledError)
    assert ended == ["done"]


async def test_a_batch_not_done_within_the_stop_s_bound_is_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay, began, ended = relay_batching(monkeypatch, 60)
    assert isinstance(await stopped_in_a_batch(relay, began), asyncio.CancelledError)
    assert ended == ["cancelled"]
