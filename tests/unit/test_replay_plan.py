"""A replay counts, and refuses without ``allow_skip``, what a partition the group never
committed on would skip: the services read such a partition from its beginning
(auto_offset_reset earliest), so moving it to a later offset leaves the records before it
unread, as moving a committed offset forward does. Kafka and PostgreSQL are faked."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from caravan.ops import replay as ops_replay
from shared.messaging import kafka_admin
from shared.messaging.kafka_admin import GroupState, PartitionOffsets

# Partition 0 committed at 7; partition 1 never committed on, its first 3 records deleted.
OFFSETS = [PartitionOffsets(0, 0, 10, 7), PartitionOffsets(1, 3, 10, None)]


@pytest.fixture
def committed(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """What the replay commits; an empty group on a topic of :data:`OFFSETS`."""
    done: dict[int, int] = {}

    async def describe_group(bootstrap: str, group: str) -> GroupState:
        return GroupState(group, "Empty", [])

    @asynccontextmanager
    async def group_client(bootstrap: str, group: str) -> AsyncIterator[Any]:
        yield None

    async def offsets(consumer: Any, topic: str) -> list[PartitionOffsets]:
        return OFFSETS

    async def commit(consumer: Any, topic: str, new: dict[int, int]) -> None:
        done.update(new)

    async def record(*args: Any) -> None:
        pass

    monkeypatch.setattr(kafka_admin, "describe_group", describe_group)
    monkeypatch.setattr(kafka_admin, "group_client", group_client)
    monkeypatch.setattr(kafka_admin, "offsets", offsets)
    monkeypatch.setattr(kafka_admin, "commit", commit)
    monkeypatch.setattr(ops_replay, "record", record)
    return done


async def replay(**how: Any) -> ops_replay.ReplayResult:
    return await ops_replay.replay("kafka", "postgresql://db", "t", "g", **how)


async def test_moving_a_partition_never_committed_on_past_its_beginning_is_a_skip(
    committed: dict[int, int],
) -> None:
    result = await replay(from_offset=5)
    assert [(p.reread, p.skipped) for p in result.plan] == [(2, 0), (0, 2)]
    assert result.refused is not None and "partition (records) 1 (2)" in result.refused
    assert not result.applied and committed == {}
    allowed = await replay(from_offset=5, allow_skip=True)
    assert allowed.applied and allowed.skipped == 2 and committed == {0: 5, 1: 5}


async def test_earliest_skips_nothing_of_a_partition_never_committed_on(
    committed: dict[int, int],
) -> None:
    result = await replay(earliest=True)
    assert [(p.new, p.reread, p.skipped) for p in result.plan] == [(0, 7, 0), (3, 0, 0)]
    assert result.applied and result.refused is None
