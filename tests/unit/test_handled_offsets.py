"""The background offset committer: one commit an interval after records are handled, none
while idle, and a failed commit tried again an interval later even if nothing else comes."""

import asyncio
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from shared.messaging.consumer import HandledOffsets

TP = TopicPartition("orders.events.v1", 0)


class FlakyConsumer:
    """Stands in for AIOKafkaConsumer's ``assignment`` and ``commit``; the first ``fails``
    commits raise."""

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.attempts: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.attempts.append(dict(offsets))
        if len(self.attempts) <= self.fails:
            raise ConnectionError("broker away")


def record(offset: int) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(TP.topic, TP.partition, offset, 0, 0, None, b"", None, 0, 0, [])


async def test_a_failed_commit_is_tried_again_with_nothing_new_handled() -> None:
    consumer = FlakyConsumer(fails=1)
    offsets = HandledOffsets(interval=0.05)
    try:
        async with offsets.handling(consumer, [record(7), record(8)]):
            pass
        await asyncio.sleep(0.5)
        assert consumer.attempts == [{TP: 9}, {TP: 9}]  # failed, then done; then quiet
    finally:
        await offsets.close()


async def test_idle_means_no_commit_and_new_records_one_commit() -> None:
    consumer = FlakyConsumer(fails=0)
    offsets = HandledOffsets(interval=0.05)
    try:
        async with offsets.handling(consumer, [record(1)]):
            pass
        await asyncio.sleep(0.3)
        async with offsets.handling(consumer, [record(2)]):
            pass
        async with offsets.handling(consumer, [record(3)]):
            pass
        await asyncio.sleep(0.3)
        assert consumer.attempts == [{TP: 2}, {TP: 4}]
    finally:
        await offsets.close()
