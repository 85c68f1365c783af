"""A service's subscriber waits for records, on real Kafka: a record that comes while it is
idle is handled at once, not after a sleep (FastStream's own batch subscriber sleeps as long
as it waited, after each empty ask)."""

import asyncio
import time
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from caravan import system
from shared.messaging.consumer import wait_for_records

WAIT_MS = 2_000


async def test_a_record_that_comes_after_an_empty_wait_is_handled_at_once(
    infrastructure: system.Infrastructure,
) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    topic = f"test.waits.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    handled: dict[bytes, float] = {}
    broker = KafkaBroker(bootstrap, logger=None)
    batches = broker.subscriber(
        topic,
        group_id=f"test-waits-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
        batch=True,
        max_records=10,
    )
    wait_for_records(batches, WAIT_MS)

    @batches
    async def on_batch(msg: KafkaMessage) -> None:
        records = msg.raw_message
        assert isinstance(records, tuple)
        for record in records:
            handled[record.value] = time.monotonic()

    await broker.start()
    try:
        await broker.publish(b"first", topic)
        deadline = time.monotonic() + 60
        while b"first" not in handled:  # the subscriber has joined and is waiting again
            assert time.monotonic() < deadline, "the first record was not handled"
            await asyncio.sleep(0.05)
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
