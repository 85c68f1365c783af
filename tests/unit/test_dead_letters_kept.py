"""What the operations page counts of the dead letters (caravan.ops.dlq.Kept): each read
reads only the letters come since the one before, forgets those that retention deleted,
and reads a dead-letter topic made again from its beginning (a fake consumer stands for
Kafka)."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from caravan.ops import dlq
from shared.messaging import kafka_admin

TP = TopicPartition("orders.requests.v1.dlq", 0)


class FakeTopic:
    """One partition of a dead-letter topic: the offsets it holds, from ``begin``."""

    def __init__(self) -> None:
        self.begin = 0
        self.end = 0
        self.made = 0  # how many times it was made again (its letters' times tell them apart)
        self.position_ = 0
        self.fetched: list[int] = []  # the offsets read, over every read

    def letter(self, count: int = 1) -> None:
        self.end += count

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.end)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.begin)

    def time(self, offset: int) -> int:
        return 1_700_000_000_000 + 1_000_000 * self.made + offset

    async def offsets_for_times(
        self, times: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        return {
            tp: next(
                (
                    OffsetAndTimestamp(n, self.time(n))
                    for n in range(self.begin, self.end)
                    if self.time(n) >= at
                ),
                None,
            )
            for tp, at in times.items()
        }

    def assign(self, tps: list[TopicPartition]) -> None:
        self.position_ = self.begin

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position_ = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.position_ = self.begin

    async def position(self, tp: TopicPartition) -> int:
        return self.position_

    async def getmany(self, *tps: TopicPartition, timeout_ms: int) -> dict[TopicPartition, Any]:
        offsets = range(self.position_, self.end)
        self.fetched += offsets
        self.position_ = self.end
        records = [
            ConsumerRecord(TP.topic, 0, n, self.time(n), 0, None, b"{}", None, 2, 0, [])
            for n in offsets
        ]
        return {TP: records}


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> FakeTopic:
    found = FakeTopic()

    @contextlib.asynccontextmanager
    async def group_client(bootstrap: str, group: str) -> AsyncIterator[FakeTopic]:
        yield found

    async def partitions(consumer: FakeTopic, names: list[str]) -> list[TopicPartition]:
        return [TP] if TP.topic in names else []

    monkeypatch.setattr(kafka_admin, "group_client", group_client)
    monkeypatch.setattr(kafka_admin, "partitions_of", partitions)
    return found


async def test_each_read_reads_only_the_letters_come_since_the_one_before(
    topic: FakeTopic,
) -> None:
    kept = dlq.Kept()
    topic.letter(3)
    assert [d.offset for d in await kept.read("kafka")] == [0, 1, 2]
    assert [d.offset for d in await kept.read("kafka")] == [0, 1, 2]
    topic.letter()
    assert [d.offset for d in await kept.read("kafka")] == [0, 1, 2, 3]
    assert topic.fetched == [0, 1, 2, 3]  # each letter read once


async def test_letters_retention_deleted_are_forgotten_and_a_topic_made_again_read_afresh(
    topic: FakeTopic,
) -> None:
    kept = dlq.Kept()
    topic.letter(4)
    await kept.read("kafka")
    topic.begin = 2  # retention deleted the first two
    assert [d.offset for d in await kept.read("kafka")] == [2, 3]
    topic.begin, topic.end = 0, 1  # deleted and made again: one letter, at offset 0
    topic.fetched.clear()
    assert [d.offset for d in await kept.read("kafka")] == [0]
    assert topic.fetched == [0]


async def test_a_topic_made_again_longer_than_what_was_read_is_read_afresh(
    topic: FakeTopic,
) -> None:
    """Its offsets alone look as if it had grown: the page kept its old letters counted."""
    kept = dlq.Kept()
    topic.letter(2)
    first = await kept.read("kafka")
    topic.made, topic.begin, topic.end = 1, 0, 3  # deleted, made again, three letters
    topic.fetched.clear()
    again = await kept.read("kafka")
    assert [d.offset for d in again] == [0, 1, 2] and not set(first) & set(again), again
    assert topic.fetched == [0, 1, 2]
    topic.letter()
    assert [d.offset for d in await kept.read("kafka")] == [0, 1, 2, 3]
    assert topic.fetched == [0, 1, 2, 3]  # then read on from where it was


async def test_a_topic_of_one_letter_made_again_is_read_from_its_first(topic: FakeTopic) -> None:
    """The page had read offset 0 alone: the new topic's letter at that same offset is newer,
    so the topic was made again (found at the offset read, not only before it)."""
    kept = dlq.Kept()
    topic.letter()
    first = await kept.read("kafka")
    topic.made, topic.begin, topic.end = 1, 0, 2  # deleted, made again, two letters
    topic.fetched.clear()
    again = await kept.read("kafka")
    assert [d.offset for d in again] == [0, 1] and not set(first) & set(again), again
    assert topic.fetched == [0, 1]
