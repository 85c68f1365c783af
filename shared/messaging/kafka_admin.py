"""The Kafka look-ups operations need: group membership (each member's client id and host),
which groups read a topic, offsets, lag and resets, and how long topics keep their records.

aiokafka's ``describe_consumer_groups`` decodes version-3 answers with the version-2 schema
and fails against Kafka 4; :class:`_DescribeGroups` asks for versions 0-2 only.
"""

import math
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.protocol import ConsumerProtocol
from aiokafka.errors import BrokerResponseError, KafkaConnectionError, KafkaError, for_code
from aiokafka.protocol.admin import (
    DescribeGroupsRequest_v0,
    DescribeGroupsRequest_v1,
    DescribeGroupsRequest_v2,
)
from aiokafka.protocol.api import Request
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.structs import OffsetAndMetadata

from shared.kafka_security import client_kwargs
from shared.settings import Settings

_Describe: TypeAlias = (
    DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2
)


class _DescribeGroups(Request[_Describe]):  # type: ignore[misc]
    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(self.groups)


@dataclass(frozen=True)
class GroupState:
    group: str
    state: str  # Stable, Empty, Dead (unknown), PreparingRebalance, ...
    members: list[str]  # their member ids
    clients: list[str] = field(default_factory=list)  # each member's client id, in order
    # Each member's partitions by topic, in order (none until the group is stable).
    assignments: list[dict[str, list[int]]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # each member's address, as Kafka saw it
    # Why its coordinator could not describe it (loading the group, or the group moved to
    # another broker: COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, ...): its members are
    # then unknown for now, not none, whatever ``members`` (empty) says.
    error: BrokerResponseError | None = None

    def named(self) -> list[str]:
        """Each member as an operator finds it: its client id (a service's instance is
        ``caravan-<service>-<CARAVAN_INSTANCE_ID>-consumer``) and the host it connects from,
        ``caravan-inventory-2-consumer (10.0.0.7)``; its member id where Kafka gave no client
        id."""
        return [
            f"{client or member} ({host})" if host else client or member
            for member, client, host in zip_longest(self.members, self.clients, self.hosts)
        ]


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    beginning: int
    end: int
    committed: int | None

    @property
    def lag(self) -> int:
        return self.end - (self.committed if self.committed is not None else self.beginning)


async def describe_group(
    bootstrap: str, group: str, settings: Settings | None = None
) -> GroupState:
    return (await describe_groups(bootstrap, [group], settings))[group]


async def describe_groups(
    bootstrap: str, groups: Iterable[str], settings: Settings | None = None
) -> dict[str, GroupState]:
    """Each of ``groups`` as its coordinator describes it, through one admin client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs(settings))
    try:
        await admin.start()
        return await described(admin._client, groups)
    finally:
        await admin.close()


async def group_of(consumer: AIOKafkaConsumer, group: str) -> GroupState:
    """``group`` as its coordinator describes it, asked through ``consumer``'s connections (a
    :func:`group_client` kept open)."""
    return (await described(consumer._client, [group]))[group]


async def described(client: AIOKafkaClient, groups: Iterable[str]) -> dict[str, GroupState]:
    """Each of ``groups`` as its coordinator describes it, asked through ``client``; one it
    answered with an error for has that :attr:`GroupState.error` (and no member listed)."""
    by_coordinator: dict[int, list[str]] = {}
    for group in groups:
        node = await client.coordinator_lookup(GROUP_COORDINATOR, group)
        by_coordinator.setdefault(node, []).append(group)
    found = {}
    for node, asked in by_coordinator.items():
        response = await client.send(node, _DescribeGroups(asked))
        for error, group_id, state, *_rest, members in response.groups:
            found[group_id] = GroupState(
                group_id,
                state,
                [m[0] for m in members],
                [m[1] for m in members],
                [_assignment(m[4]) for m in members],
                [m[2].lstrip("/") for m in members],
                for_code(error)(f"describing group {group_id}") if error else None,
            )
    return found


GROUP_COORDINATOR = 0  # FindCoordinator's key type for a consumer group


def _assignment(given: bytes) -> dict[str, list[int]]:
    """A member's partitions by topic, from its assignment as the group describes it."""
    if not given:
        return {}
    decoded = ConsumerProtocol.ASSIGNMENT.decode(given)
    return {topic: sorted(partitions) for topic, partitions in decoded.assignment}


async def groups_reading(bootstrap: str, topic: str, settings: Settings | None = None) -> list[str]:
    """The consumer groups that have committed an offset on ``topic``, sorted: the groups
    that read it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs(settings))
    try:
        await admin.start()
        found = []
        for group, _protocol in await admin.list_consumer_groups():
            committed = await admin.list_consumer_group_offsets(group)
            if any(tp.topic == topic for tp in committed):
                found.append(group)
        return sorted(found)
    finally:
        await admin.close()


@asynccontextmanager
async def group_client(
    bootstrap: str, group: str, settings: Settings | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer that reads and commits the offsets of ``group`` without joining it.

    Stopped however its use ends, a start that failed or was cancelled included (a service
    stopped in its first seconds would otherwise leave its connection open)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        **client_kwargs(settings),
    )
    try:
        await consumer.start()
        yield consumer
    finally:
        await consumer.stop()


class NoSuchTopic(LookupError):
    """The cluster has no topic of that name (not created yet, or a name mistyped)."""


async def cluster_metadata(consumer: AIOKafkaConsumer) -> ClusterMetadata:
    """The cluster's metadata, as ``consumer``'s client fetches it. No broker giving it is
    Kafka away: aiokafka raises it as a bare :class:`KafkaError`, not retriable, so a sample
    meeting it was said as another fault's ("metrics sample failed: KafkaError: Unable to get
    cluster metadata ..."), and the process's Kafka outage began at its next line, later
    (a broker restart of 8 s said "Kafka answers again, 2 s after it was first found away")."""
    try:
        return await consumer._client.fetch_all_metadata()
    except KafkaError as exc:
        if type(exc) is KafkaError:  # aiokafka's words for no broker answering
            raise KafkaConnectionError(*exc.args) from exc
        raise


async def partitions_of(consumer: AIOKafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    """The partitions of ``topics`` (:class:`NoSuchTopic` for the first missing), from one
    metadata request, ``consumer``'s client then told of them all: its offset requests found
    each topic unknown to it in turn, asked for metadata again and slept 100 ms, 0.6 s for
    the six dead-letter topics before ``dlq list`` read a letter (and 0.2 s of a replay's
    plan). The client keeps the topics it knew: told of only these, a client asked of one
    topic after another (the lag sampler's) fetched metadata again for each, every time."""
    meta = await cluster_metadata(consumer)
    found: list[TopicPartition] = []
    for topic in topics:
        parts = meta.partitions_for_topic(topic)
        if not parts:
            raise NoSuchTopic(f"no topic {topic!r}")
        found += [TopicPartition(topic, p) for p in sorted(parts)]
    client = consumer._client
    await client.set_topics(client._topics | set(topics))
    return found


async def offsets(consumer: AIOKafkaConsumer, topic: str) -> list[PartitionOffsets]:
    tps = await partitions_of(consumer, [topic])
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    done = await committed(consumer, tps)
    return [PartitionOffsets(tp.partition, begin[tp], end[tp], done[tp]) for tp in tps]


async def committed(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The committed offset of each of ``tps`` (None: none committed) of ``consumer``'s group
    (a :func:`group_client`), asked of its coordinator in one request.

    Not aiokafka's ``committed``: a coordinator that cannot answer for the group yet (a
    broker just restarted, loading the group's offsets: COORDINATOR_LOAD_IN_PROGRESS, or
    NOT_COORDINATOR before that) says so, from OffsetFetch version 2, in the answer's own
    error code with no partition listed, which aiokafka does not read: it returned None, no
    offset committed, and the lag read every record the topic keeps (thousands, the first
    sample after a Kafka restart). That error is raised here (retriable): unknown, not none."""
    request = OffsetFetchRequest(consumer._group_id, [(tps[0].topic, [tp.partition for tp in tps])])
    node = await consumer._client.coordinator_lookup(GROUP_COORDINATOR, consumer._group_id)
    response = await consumer._client.send(node, request)
    if getattr(response, "error_code", 0):  # no such field before version 2
        raise for_code(response.error_code)(f"fetching group {consumer._group_id}'s offsets")
    found: dict[TopicPartition, int | None] = dict.fromkeys(tps)
    for topic, partitions in response.topics:
        for partition, offset, _metadata, error in partitions:
            if error:
                raise for_code(error)(f"fetching the offset of {topic}[{partition}]")
            found[TopicPartition(topic, partition)] = offset if offset >= 0 else None
    return found


async def offsets_at(consumer: AIOKafkaConsumer, topic: str, timestamp_ms: int) -> dict[int, int]:
    """Per partition, the first offset at or after ``timestamp_ms`` (the end if none)."""
    tps = await partitions_of(consumer, [topic])
    found = await consumer.offsets_for_times(dict.fromkeys(tps, timestamp_ms))
    end = await consumer.end_offsets(tps)
    return {tp.partition: (found[tp].offset if found[tp] is not None else end[tp]) for tp in tps}


async def commit(consumer: AIOKafkaConsumer, topic: str, new: dict[int, int]) -> None:
    """Set the group's committed offsets (Kafka refuses while the group has members)."""
    tps = {TopicPartition(topic, p): OffsetAndMetadata(o, "caravan replay") for p, o in new.items()}
    consumer.assign(list(tps))
    await consumer.commit(tps)


HOUR_MS = 3_600_000


async def longest_kept_hours(
    bootstrap: str, topics: Iterable[str], settings: Settings | None = None
) -> float:
    """The longest Kafka may keep a record of ``topics``, in hours, as their configurations
    say now: a log segment is deleted once its newest record is older than ``retention.ms``,
    and a segment is rolled after ``segment.ms``, so a record can live for both. Infinite
    when a topic keeps records for ever (``retention.ms`` -1, or compaction alone: compacted
    records are kept until a newer one of their key comes)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
    if not resources:
        return 0.0
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs(settings))
    try:
        await admin.start()
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    longest = 0.0
    for response in responses:
        for error_code, message, _type, topic, entries in response.resources:
            if error_code:
                raise for_code(error_code)(f"describing the configuration of {topic}: {message}")
            config = {entry[0]: entry[1] for entry in entries}
            retention_ms = int(config["retention.ms"])
            policy = [p.strip() for p in config.get("cleanup.policy", "delete").split(",")]
            if retention_ms < 0 or "delete" not in policy:
                return math.inf
            longest = max(longest, (retention_ms + int(config["segment.ms"])) / HOUR_MS)
    return longest
