"""Proving that something did NOT happen: wait for a marker that must come after it, were it
going to happen, then look. (A test that slept a while and then looked proved nothing on a
loaded machine, where the unwanted thing could come after the look, and cost the sleep.)

The orders that make a marker: Kafka keeps order per partition; a consumer handles one
partition in order, commits its state and outbox in the handling transaction and its offset
after; a relay publishes its outbox rows in order. So:

- :func:`consumed_again`: a service has handled whatever came before a record on its
  partition once it has committed past a copy of that record sent again after it;
- :func:`read_to_the_end`: the event log has every record that was in the topics at the time
  it was asked; :func:`published`: and every record a service's committed transactions
  emitted for a key;
- :func:`drained`: nothing is left in flight anywhere (every group has read every topic it
  reads to the end, every outbox is published, and that brought no new record).
"""

import asyncio
import contextlib
import functools
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata

from services import SERVICES
from shared.events.envelope import CloudEvent
from shared.events.registry import parse_record
from shared.messaging import kafka_admin
from shared.topics import ALL_TOPICS, Topic
from tests.harness import System, committed_offsets

TEXTED_ON = (Topic.ORDER_EVENTS, Topic.INVENTORY_EVENTS)
"""The topics whose events make notifications text about an order (:func:`order_handled`)."""


def _record(caravan: System, event: CloudEvent) -> list[ConsumerRecord]:
    """The records of ``event`` (one, or copies of it) the event log has read so far."""
    topics = {t.value: t for t in Topic}
    return [
        r
        for r in list(caravan.log.records)
        if r.topic in topics
        and event.id.encode() in r.value
        and parse_record(topics[r.topic], r.value).envelope.id == event.id
    ]


async def consumed_again(caravan: System, service: str, *events: CloudEvent) -> None:
    """Send ``events`` again (on their topic, with their key: on their partition), as a
    redelivery the inbox drops, and wait until ``service``'s group has committed past the
    copies: what it did on handling any record before them on those partitions is committed
    by then."""
    sent: list[RecordMetadata] = []
    for event in events:
        found = await caravan.wait_for(functools.partial(_record, caravan, event))
        record = found[0]
        headers = list(record.headers)  # a trace's parent, as the relay sent it
        sent.append(await caravan.publish_raw(record.topic, record.value, record.key, headers))
    await caravan.consumed(service, *sent)


async def order_handled(caravan: System, service: str, order_id: str, *topics: Topic) -> None:
    """Wait until ``service`` has handled every event of ``order_id`` on ``topics`` there is
    (:func:`consumed_again`, with the last of each, which is on the order's partition)."""
    last = [
        (await caravan.wait_for(functools.partial(caravan.log.events, t, order_id=order_id)))[-1]
        for t in topics
    ]
    await consumed_again(caravan, service, *last)


async def _ends(caravan: System, topics: Sequence[str]) -> dict[TopicPartition, tuple[int, int]]:
    """The beginning and end offsets of every partition of ``topics``, now."""
    assert topics, "no topic named"
    consumer = AIOKafkaConsumer(bootstrap_servers=caravan.infra.kafka_bootstrap)
    await consumer.start()
    try:
        tps = []
        for topic in topics:
            with contextlib.suppress(kafka_admin.NoSuchTopic):  # a dead-letter topic unused
                tps += await kafka_admin.partitions_of(consumer, [topic])
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        return {tp: (begin[tp], end[tp]) for tp in tps}
    finally:
        await consumer.stop()


def _unread(caravan: System, ends: Mapping[TopicPartition, tuple[int, int]]) -> list[str]:
    last: dict[TopicPartition, int] = {}
    for r in list(caravan.log.records):
        tp = TopicPartition(r.topic, r.partition)
        last[tp] = max(last.get(tp, -1), r.offset)
    return [
        f"{tp.topic}:{tp.partition} (read to {last.get(tp, -1)} of {end})"
        for tp, (begin, end) in ends.items()
        if end > begin and last.get(tp, -1) < end - 1
    ]


async def read_to_the_end(caravan: System, *topics: str) -> None:
    """Wait until the event log has read every record ``topics`` hold now: one sent before
    this was called (by a command that has exited, say) is in ``caravan.log`` by then."""
    ends = await _ends(caravan, topics)
    await caravan.until(
        lambda: _unread(caravan, ends),
        lambda left: f"the event log to read {', '.join(left)}",
        ready=lambda left: not left,
    )


async def published(caravan: System, service: str, key: str, topic: Topic) -> None:
    """Wait until ``service``'s relay has published every row of its outbox keyed ``key`` (an
    order id, say) that is there now, and the event log has read ``topic`` to the end: what a
    transaction of ``service`` that has committed emitted on ``topic`` for ``key`` is in
    ``caravan.log`` by then."""
    unsent = f"select count(*) from {service}.outbox where key = :k and sent_at is null"
    await caravan.until(
        lambda: caravan.scalar(unsent, k=key.encode()),
        f"{service}'s outbox rows of {key} published",
        ready=lambda left: left == 0,
    )
    await read_to_the_end(caravan, topic.value)


async def _unsent(caravan: System) -> int:
    """Outbox rows no relay has published yet, in every service's schema."""
    return int(
        await caravan.scalar(
            "select "
            + " + ".join(
                f"(select count(*) from {schema}.outbox where sent_at is null)"
                for schema in SERVICES  # each service's tables are in a schema of its name
            )
        )
    )


MEMBERLESS_SECONDS = 30.0
"""How long :func:`drained` waits on a group that is behind with no member before it fails:
well past the seconds a service started again (ready, its /healthz answering) takes to join."""


async def _behind(
    caravan: System,
    reads: Mapping[str, Sequence[Topic]],
    ends: Mapping[TopicPartition, tuple[int, int]],
    memberless: dict[str, float],
) -> list[str]:
    """The partitions whose end (of ``ends``) a group of ``reads`` has not committed yet.

    A group behind with no member (its service not running, or no service's group at all)
    would never catch up: this fails naming it once it has had none for
    ``MEMBERLESS_SECONDS`` (``memberless``: since when each has had none, kept between
    calls). One merely behind has its service's consumers as members."""
    left, bootstrap = [], caravan.infra.kafka_bootstrap
    for group, topics in reads.items():
        done = await committed_offsets(bootstrap, group)
        names = {t.value for t in topics}
        behind = [
            f"{tp.topic}:{tp.partition} ({group} at {done.get(tp, begin)} of {end})"
            for tp, (begin, end) in ends.items()
            if tp.topic in names and done.get(tp, begin) < end
        ]
        left += behind
        state = await kafka_admin.describe_group(bootstrap, group) if behind else None
        if state is not None and state.error is not None:
            continue  # members unknown for now (its coordinator loading): asked again next time
        if state is None or state.members:
            memberless.pop(group, None)
            continue
        now = asyncio.get_running_loop().time()
        since = memberless.setdefault(group, now)
        assert now - since < MEMBERLESS_SECONDS, (
            f"group {group} is behind with no member for {now - since:.0f}s ({state.state}:"
            f" no service reading as it runs): {', '.join(behind)}"
        )
    return left


async def drained(
    caravan: System, reads: Mapping[str, Sequence[Topic]], timeout: float = 120.0
) -> None:
    """Wait until nothing is in flight: each consumer group of ``reads`` (the topics it
    reads) has committed the end of its topics as they were, every outbox is published, and
    the topics' ends did not move meanwhile (so no record was added that some group has
    not handled); then until the event log has read it all. Whatever handling any record
    emitted is in ``caravan.log`` by then (a timer's doing, a retry say, is not). A group
    behind with no member for ``MEMBERLESS_SECONDS`` fails then, named, not at ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    memberless: dict[str, float] = {}
    while True:
        ends = await _ends(caravan, ALL_TOPICS)
        await caravan.until(
            functools.partial(_behind, caravan, reads, ends, memberless),
            lambda left: f"the groups to read {', '.join(left)} to the end",
            timeout,
            every=0.2,
            ready=lambda left: not left,
        )
        await caravan.until(
            lambda: _unsent(caravan),
            "every outbox published",
            timeout,
            0.2,
            ready=lambda left: left == 0,
        )
        if await _ends(caravan, ALL_TOPICS) == ends:
            break
        assert asyncio.get_running_loop().time() < deadline, "records kept coming"
    await read_to_the_end(caravan, *ALL_TOPICS)
