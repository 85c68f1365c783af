"""A Kafka client whose start is cancelled is closed all the same. A service stopped in its
first seconds cancelled its lag sampler and its retention loop while their clients were
connecting, and asyncio logged "Unclosed AIOKafkaConsumer" and "Unclosed AIOKafkaConnection"
at the error level as the process ended (seen in CI's service logs).

The start is made to hang (nothing listens on the address given), so the cancellation lands
inside it, as it did in those services."""

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from shared.messaging import kafka_admin

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
