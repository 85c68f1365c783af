"""The outbox relay (shared/messaging/relay.py) against the running system: a row Kafka
refuses for good is set aside with its reason, and the rows after it go out."""

import re

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text

from shared.topics import Topic
from tests.e2e.test_messaging_retention import topics_with
from tests.e2e.test_saga import order
from tests.harness import System, ref, until

MIB = 1 << 20


async def read_topic(bootstrap: str, topic: str, count: int | None = None) -> list[bytes]:
    """The values of the first ``count`` records of ``topic`` (one partition); of every
    record it holds now, unless ``count`` is given."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning()
        if count is None:
            count = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []

        async def more() -> list[bytes]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                values.extend(r.value for r in records)
            return values

        return await until(more, f"{count} records on {topic}", ready=lambda v: len(v) >= count)
    finally:
        await consumer.stop()


async def test_a_row_kafka_refuses_is_set_aside_and_the_rows_after_it_go_out(
    caravan: System,
) -> None:
    """Rows the orders relay takes in one batch: on a topic taking 2,000 bytes at most, a
    small row, one of 3,000 bytes (the broker refuses it) and a small one after it (sent by
    the producer that numbered the refused one, it would be out of sequence); a row of 2 MiB
    on orders.events.v1 (the producer refuses it) and one for a topic name Kafka rejects.
    The three refused rows are set aside with their reasons; the others, and an order placed
    after them, go out."""
    small = (await topics_with(caravan.infra.kafka_bootstrap, small={"max.message.bytes": "2000"}))[
        "small"
    ]
    key = ref("RELAY").encode()
    rows = [
        (small, b"first"),
        (small, b"x" * 3000),
        (small, b"after"),
        (Topic.ORDER_EVENTS.value, b"x" * (2 * MIB)),
        ("not a topic!", b"{}"),
    ]
    assert caravan.engine is not None
    async with caravan.engine.begin() as conn:
        ids = [
            (
                await conn.execute(
                    text(
                        "insert into orders.outbox (topic, key, value)"
                        " values (:t, :k, :v) returning id"
                    ),
                    {"t": topic, "k": key, "v": value},
                )
            ).scalar_one()
            for topic, value in rows
        ]
    try:
        req = order()
        await caravan.request(req)
        order_id = await caravan.placed(req.order_ref)
        assert (await caravan.outcome(order_id)).type == "order.confirmed"
        assert await read_topic(caravan.infra.kafka_bootstrap, small, 2) == [b"first", b"after"]
        found = await until(
            lambda: caravan.sql(
                "select id, sent_at is not null, refusal from orders.outbox"
                " where id = any(:ids) order by id",
                ids=ids,
            ),
            "the rows to be sent or set aside",
            ready=lambda found: all(sent or refusal for _, sent, refusal in found),
        )
        said = [(sent, (refusal or "").split(":")[0]) for _, sent, refusal in found]
        assert said == [
            (True, ""),
            (False, "MessageSizeTooLargeError"),
            (True, ""),
            (False, "MessageSizeTooLargeError"),
            (False, "InvalidTopicError"),
        ], found
        log = (caravan.procs.log_dir / "orders.log").read_text()
        for row_id in (ids[1], ids[3], ids[4]):
            assert log.count(f"outbox row {row_id} set aside") == 1
        metrics = (await caravan.client.get("/metrics")).text
        refused = {
            m.group(1): float(m.group(2))
            for m in re.finditer(
                r'^caravan_outbox_refused_total\{error="(\w+)",service="orders"\} (\S+)$',
                metrics,
                re.MULTILINE,
            )
        }
        assert refused == {  # every refusal shown from the start, at 0 until it comes
            "MessageSizeTooLargeError": 2.0,
            "RecordListTooLargeError": 0.0,
            "InvalidTopicError": 1.0,
        }
        # Sampled every 5 s: the rows set aside, apart from the backlog.
        await until(
            lambda: caravan.client.get("/metrics"),
            "caravan_outbox_refused_rows of orders to say 3",
            timeout=15,
            ready=lambda r: 'caravan_outbox_refused_rows{service="orders"} 3.0' in r.text,
        )
    finally:
        await caravan.execute("delete from orders.outbox where id = any(:ids)", ids=ids)
