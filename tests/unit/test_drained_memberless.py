"""tests/e2e/markers.py's :func:`drained` fails at once on a group behind with no member for
``MEMBERLESS_SECONDS`` (no service reading as it); a group Kafka cannot describe now is not
one with no member. Kafka is faked."""

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest
from aiokafka import TopicPartition, errors

from shared.messaging import kafka_admin
from shared.topics import Topic
from tests.e2e import markers
from tests.harness import System
from tests.unit.conftest import Coordinator


async def test_a_group_its_coordinator_is_loading_is_not_taken_for_one_with_no_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While its coordinator loads the group (the broker restarted), DescribeGroups answers
    it with that error and no member: drained failed, "behind with no member", for a group
    its service reads as it runs."""
    topic = Topic.ORDER_REQUESTS
    group = "caravan-orders"
    loading = Coordinator({group: errors.CoordinatorLoadInProgressError.errno})

    async def committed_offsets(bootstrap: str, asked: str) -> dict[TopicPartition, int]:
        return {}  # none yet: the partition's 4 records are behind

    async def describe_group(bootstrap: str, asked: str) -> kafka_admin.GroupState:
        return (await kafka_admin.described(loading, [asked]))[asked]

    monkeypatch.setattr(markers, "committed_offsets", committed_offsets)
    monkeypatch.setattr(kafka_admin, "describe_group", describe_group)
    caravan = cast(System, SimpleNamespace(infra=SimpleNamespace(kafka_bootstrap="kafka")))
    ends = {TopicPartition(topic.value, 0): (0, 4)}
    since = asyncio.get_running_loop().time() - markers.MEMBERLESS_SECONDS - 1
    memberless: dict[str, float] = {group: since}  # seen with no member that long ago
    left = await markers._behind(caravan, {group: [topic]}, ends, memberless)
    assert left == [f"{topic.value}:0 ({group} at 0 of 4)"]
    assert memberless == {group: since}  # neither none nor some: asked again next time
    loading.errors.clear()  # loaded: its member is listed
    await markers._behind(caravan, {group: [topic]}, ends, memberless)
    assert memberless == {}
