"""Subscribers take records in batches and handle each batch in one transaction: a backlog
is handled in few transactions, and poison records, invalid data and duplicates inside a
batch end exactly as they do when records come one at a time."""

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiokafka.structs import RecordMetadata

from shared.events.envelope import new_event
from shared.events.orders import OrderRequested
from shared.messaging.consumer import dead_letter_key
from shared.topics import Topic
from tests.harness import System, raw_event, ref
from tests.unit.test_field_errors import PHONE

SOURCE = "storefront/batch"


def order(order_ref: str) -> OrderRequested:
    return OrderRequested.model_validate(
        {
            "order_ref": order_ref,
            "buyer": {"id": "t-rich", "phone": "+8613900000001", "locale": "en"},
            "lines": [{"sku": "T-PEPPER", "quantity": 1}],
            "payment": {"method": "prepaid"},
        }
    )


async def with_orders_stopped(caravan: System, publish: Callable[[], Awaitable[None]]) -> None:
    """Publish while the orders service is down, so that it finds one backlog on start."""
    await asyncio.to_thread(caravan.procs.stop, ["orders"])
    try:
        await publish()
    finally:
        await caravan.restart(("orders",))


async def confirmed_once(caravan: System, order_ref: str) -> None:
    order_id = await caravan.placed(order_ref, source=SOURCE)
    assert (await caravan.outcome(order_id)).type == "order.confirmed"
    assert (
        len(caravan.log.events(Topic.ORDER_EVENTS, type="order.placed", order_ref=order_ref)) == 1
    )
    assert (
        await caravan.scalar("select count(*) from orders.orders where order_ref = :r", r=order_ref)
        == 1
    )


async def test_a_backlog_is_handled_in_few_transactions(caravan: System) -> None:
    events = [new_event(order(ref("BATCH")), source=SOURCE) for _ in range(30)]

    async def publish() -> None:
        for event in events:
            await caravan.publish_raw(
                Topic.ORDER_REQUESTS.value, event.to_json(), str(event.data["order_ref"]).encode()
            )

    await with_orders_stopped(caravan, publish)
    for event in events:
        await confirmed_once(caravan, str(event.data["order_ref"]))
    transactions = await caravan.scalar(
        "select count(distinct xmin::text) from orders.inbox where key = any(:keys)",
        keys=[f"{SOURCE}|{event.id}" for event in events],
    )
    assert 1 <= transactions <= 10  # one per batch, not one per record


async def test_poison_invalid_and_duplicate_records_in_a_batch(caravan: System) -> None:
    key = ref("MIXED").encode()  # one key: one partition, so they arrive as one batch
    first, second, third = (new_event(order(ref("MIXED")), source=SOURCE) for _ in range(3))
    invalid_ref = ref("MIXED-BAD")
    invalid = orjson.dumps(
        raw_event(
            "order.requested",
            {
                "order_ref": invalid_ref,
                "buyer": {"id": "t-rich", "phone": "12345", "locale": "en"},
                "lines": [{"sku": "T-PEPPER", "quantity": 1}],
                "payment": {"method": "prepaid"},
            },
            source=SOURCE,
        )
    )
    poison = b"\xff{not json " + key
    records = [
        first.to_json(),
        poison,
        second.to_json(),
        first.to_json(),  # the same event again
        invalid,
        third.to_json(),
    ]

    async def publish() -> None:
        for value in records:
            await caravan.publish_raw(Topic.ORDER_REQUESTS.value, value, key)

    await with_orders_stopped(caravan, publish)
    for event in (first, second, third):
        await confirmed_once(caravan, str(event.data["order_ref"]))
    rejected = await caravan.wait_for(
        lambda: caravan.log.events(Topic.ORDER_EVENTS, type="order.rejected", order_ref=invalid_ref)
    )
    assert len(rejected) == 1
    assert rejected[0].data["errors"] == [{"field": "buyer.phone", "message": PHONE}]  # no regex
    dead = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key], count=2
    )
    errors = sorted(dict(r.headers)["dlq.error"].decode() for r in dead)
    assert errors == ["invalid_data", "not_json"]
    reasons = {dict(r.headers)["dlq.error.message"].decode() for r in dead if r.value == invalid}
    assert reasons == {f"buyer.phone: {PHONE}"}
    assert sorted(r.value for r in dead) == sorted([poison, invalid])
    # Everything of the batch is handled, nothing twice: the inbox has each event once.
    keys = [f"{SOURCE}|{e.id}" for e in (first, second, third)]
    assert (
        await caravan.scalar("select count(*) from orders.inbox where key = any(:k)", k=keys) == 3
    )


async def test_a_claim_left_at_a_poison_records_coordinates_does_not_swallow_it(
    caravan: System,
) -> None:
    """The dead-letter claim names the record by its coordinates and its value: a claim left
    at the same topic, partition and offset by another record (of a topic deleted and
    created again) must not make this one vanish unrecorded."""
    key = ref("SAME-OFFSET").encode()
    poison = b"\xff{not json " + key
    sent: list[RecordMetadata] = []

    async def publish() -> None:
        sent.append(await caravan.publish_raw(Topic.ORDER_REQUESTS.value, poison, key))
        at = sent[0]
        earlier = dead_letter_key(
            "caravan-orders", at.topic, at.partition, at.offset, b"another record"
        )
        await caravan.execute(
            "insert into orders.inbox (key, topic) values (:k, :t)", k=earlier, t=at.topic
        )

    await with_orders_stopped(caravan, publish)
    dead = await caravan.wait_for(
        lambda: [r for r in caravan.log.raw(Topic.ORDER_REQUESTS.dlq) if r.key == key]
    )
    assert [r.value for r in dead] == [poison]
    assert dict(dead[0].headers)["dlq.offset"].decode() == str(sent[0].offset)
