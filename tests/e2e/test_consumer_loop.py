"""A service's subscriber loop on real Kafka: it waits for records (a record that comes while
it is idle is handled at once, not after a sleep, as FastStream's own batch subscriber would
after each empty ask); it commits offsets once after handling, not on a clock while idle; and
when a rebalance takes its partitions, it commits what it handled of them at once."""

import asyncio
import time
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber

from caravan import system
from shared.messaging import kafka_admin
from shared.messaging.consumer import HandledOffsets, wait_for_records
from tests.harness import committed_offsets, until

WAIT_MS = 2_000


async def new_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"test.loop.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


def batch_subscriber(
    broker: KafkaBroker,
    topic: str,
    group: str,
    ack_policy: AckPolicy,
    offsets: HandledOffsets | None = None,
) -> BatchSubscriber:
    """A batch subscriber that waits for records as the services' do (and, given
    ``offsets``, commits what it handled when its partitions are revoked, as theirs do)."""
    batches = broker.subscriber(
        topic,
        group_id=group,
        auto_offset_reset="earliest",
        ack_policy=ack_policy,
        batch=True,
        max_records=10,
        listener=offsets.listener() if offsets else None,
    )
    wait_for_records(batches, WAIT_MS)
    return batches


async def test_a_record_that_comes_after_an_empty_wait_is_handled_at_once(
    infrastructure: system.Infrastructure,
) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    topic = await new_topic(bootstrap)
    handled: dict[bytes, float] = {}
    broker = KafkaBroker(bootstrap, logger=None)
    batches = batch_subscriber(broker, topic, f"test-loop-{uuid.uuid4().hex[:8]}", AckPolicy.ACK)

    @batches
    async def on_batch(msg: KafkaMessage) -> None:
        records = msg.raw_message
        assert isinstance(records, tuple)
        for record in records:
            handled[record.value] = time.monotonic()

    await broker.start()
    try:
        await broker.publish(b"first", topic)
        # The subscriber has joined and is waiting again once the first record is handled.
        await until(lambda: b"first" in handled, "the first record to be handled", 60, every=0.05)
        # One wait of WAIT_MS ends empty here; FastStream's subscriber would then sleep
        # WAIT_MS more, and a record published in that time would wait for the sleep's end.
        await asyncio.sleep(WAIT_MS / 1000 * 1.25)
        sent = time.monotonic()
        await broker.publish(b"second", topic)
        while b"second" not in handled:
            assert time.monotonic() < sent + 10, "the second record was not handled"
            await asyncio.sleep(0.01)
        assert handled[b"second"] - sent < WAIT_MS / 1000 / 2, handled[b"second"] - sent
    finally:
        await broker.stop()


async def committed(bootstrap: str, group: str) -> int:
    """The sum of ``group``'s committed offsets."""
    return sum((await committed_offsets(bootstrap, group)).values())


class CountedOffsets(HandledOffsets):
    calls = 0

    async def commit(self) -> None:
        self.calls += 1
        await super().commit()


async def test_offsets_are_committed_after_handling_and_not_while_idle(
    infrastructure: system.Infrastructure,
) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    topic = await new_topic(bootstrap)
    group = f"test-loop-{uuid.uuid4().hex[:8]}"
    offsets = CountedOffsets(interval=0.2)
    broker = KafkaBroker(bootstrap, logger=None)
    batches = batch_subscriber(broker, topic, group, AckPolicy.MANUAL)

    @batches
    async def on_batch(msg: KafkaMessage) -> None:
        records = msg.raw_message
        assert isinstance(records, tuple)
        async with offsets.handling(msg.consumer, records):
            pass

    await broker.start()
    try:
        for value in (b"a", b"b", b"c"):
            await broker.publish(value, topic)
        await until(
            lambda: committed(bootstrap, group),
            "the group's committed offsets to sum to 3",
            ready=lambda n: n == 3,
        )
        calls = offsets.calls
        await asyncio.sleep(offsets.interval * 10)  # idle: nothing handled, nothing to commit
        assert offsets.calls == calls, "the committer woke while idle"
        await broker.publish(b"d", topic)
        await until(
            lambda: committed(bootstrap, group),
            "the group's committed offsets to sum to 4",
            ready=lambda n: n == 4,
        )
    finally:
        await offsets.close()
        await broker.stop()


async def test_a_member_that_loses_its_partitions_commits_what_it_handled_at_once(
    infrastructure: system.Infrastructure,
) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    topic = await new_topic(bootstrap, partitions=2)
    group = f"test-loop-{uuid.uuid4().hex[:8]}"
    offsets = HandledOffsets(interval=600)  # only a rebalance commits within this test
    handled: list[bytes] = []
    first = KafkaBroker(bootstrap, logger=None)
    batches = batch_subscriber(first, topic, group, AckPolicy.MANUAL, offsets)

    @batches
    async def on_batch(msg: KafkaMessage) -> None:
        records = msg.raw_message
        assert isinstance(records, tuple)
        async with offsets.handling(msg.consumer, records):
            handled.extend(record.value for record in records)

    second = KafkaBroker(bootstrap, logger=None)
    joiner = batch_subscriber(second, topic, group, AckPolicy.MANUAL)
    # What the joining member is given: nothing, if the first member's commit came before
    # the group's new assignment (FastStream would swallow an error raised in its handler).
    given: list[bytes] = []

    @joiner
    async def on_joiner_batch(msg: KafkaMessage) -> None:
        records = msg.raw_message
        assert isinstance(records, tuple)
        given.extend(record.value for record in records)

    await first.start()
    try:
        for i in range(4):
            await first.publish(f"r{i}".encode(), topic, partition=i % 2)
        await until(
            lambda: handled, "the 4 records to be handled", 60, ready=lambda got: len(got) >= 4
        )
        assert await committed(bootstrap, group) == 0  # the interval has not passed
        await second.start()  # a rebalance: the first member's partitions are revoked
        try:
            await until(
                lambda: committed(bootstrap, group),
                "the offsets committed at the rebalance to sum to 4",
                60,
                every=0.2,
                ready=lambda n: n == 4,
            )
            await until(
                lambda: kafka_admin.describe_group(bootstrap, group),
                "the group to be stable with two members",
                60,
                every=0.5,
                ready=lambda g: g.state == "Stable" and len(g.members) == 2,
            )
            # A record more on each partition, sent now: whichever member holds a partition is
            # given it after whatever it was to be given there before.
            marks = [b"m0", b"m1"]
            for partition, mark in enumerate(marks):
                await first.publish(mark, topic, partition=partition)
            await until(
                lambda: [m for m in marks if m not in handled + given],
                lambda left: f"{left} to be handled by either member",
                60,
                every=0.05,
                ready=lambda left: not left,
            )
            old = [value for value in given if value not in marks]
            assert old == [], "the joiner was given records the first member had handled"
        finally:
            await second.stop()
    finally:
        await offsets.close()
        await first.stop()
