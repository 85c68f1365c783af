"""A rebalance while a batch is handled, for certain: inventory's batch waits for a lot the test
holds locked while a second instance joins the group, handles the orders of a partition taken
from the first, and leaves, so that the partition comes back. The held batch then ends and
commits nothing: the partition's committed offset stays where its other owner left it (an
offset of the held batch, from before the rebalances, would move it back, and the next owner
would do those records again). Each order is reserved once, and each record handled."""

import asyncio
import uuid

from aiokafka import TopicPartition
from aiokafka.structs import RecordMetadata

from caravan import system
from shared.events.envelope import EventData, new_event
from shared.events.orders import OrderPlaced, OrderRejected
from shared.messaging import kafka_admin
from shared.messaging.kafka_admin import GroupState
from shared.topics import Topic, consumer_group
from tests.e2e.inventory_seed import one_sku_seed
from tests.e2e.test_killed_mid_batch import times_reserved
from tests.harness import System, committed_offsets

STOCK = 20
ORDERS = 4  # handled by the second instance
BUYER = {"id": "rebalance-batch-buyer", "phone": "+8613900007041", "locale": "en"}
GROUP = consumer_group("inventory")
TOPIC = Topic.ORDER_EVENTS.value
HELD = 0  # the held order's partition: the first instance keeps it


async def _publish(caravan: System, data: EventData, partition: int) -> RecordMetadata:
    event = new_event(data, source="caravan/orders")
    key = data.partition_key().encode()
    return await caravan.publish_raw(TOPIC, event.to_json(), key, partition=partition)


def _placed(sku: str) -> OrderPlaced:
    return OrderPlaced.model_validate(
        {
            "order_id": str(uuid.uuid4()),
            "order_ref": f"REB-{uuid.uuid4().hex[:10]}",
            "source": "storefront/test",
            "buyer_id": BUYER["id"],
            "lines": [{"sku": sku, "quantity": 1}],
            "buyer": BUYER,
            "payment": {"method": "prepaid"},
        }
    )


def _rejected() -> OrderRejected:
    """An event of orders' topic that inventory skips (it handles none of its type)."""
    return OrderRejected.model_validate(
        {
            "order_ref": f"REB-{uuid.uuid4().hex[:10]}",
            "source": "storefront/test",
            "errors": [{"field": "lines", "message": "empty"}],
        }
    )


async def _group(caravan: System, members: int, what: str) -> GroupState:
    return await caravan.until(
        lambda: kafka_admin.describe_group(caravan.infra.kafka_bootstrap, GROUP),
        what,
        60,
        every=0.5,
        ready=lambda group: group.state == "Stable" and len(group.members) == members,
    )


def _partitions(group: GroupState, instance: int) -> list[int]:
    client = f"caravan-inventory-{instance}-consumer"
    [given] = [a for c, a in zip(group.clients, group.assignments, strict=True) if c == client]
    return given.get(TOPIC, [])


async def test_a_batch_handled_while_its_partitions_were_revoked_commits_nothing(
    caravan: System,
) -> None:
    held_sku, free_sku = (f"REB-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for sku in (held_sku, free_sku):
        buyers = [{**BUYER, "credit_limit_fen": 10**9}]
        await caravan.seed(one_sku_seed(sku, 100, {"A": (STOCK, -10, 10)}, buyers))
    bootstrap = caravan.infra.kafka_bootstrap
    # A backlog, the first batch of inventory started again: the held order and, on each other
    # partition, a record it skips.
    await asyncio.to_thread(caravan.procs.stop, ["inventory"])
    held = _placed(held_sku)
    orders = [_placed(free_sku) for _ in range(ORDERS)]
    started_two = False
    try:
        held_at = await _publish(caravan, held, HELD)
        for partition in (1, 2):
            await _publish(caravan, _rejected(), partition)
        async with caravan.row_locked("inventory.lots", "lot_id", f"{held_sku}-A") as holder:
            caravan.procs.start(("inventory",))
            await asyncio.to_thread(system.wait_ready, caravan.procs)
            await caravan.lock_waiters(holder, "inventory's batch to wait for the held lot")
            caravan.procs.start(("inventory",), instance=2)
            started_two = True
            two = await _group(caravan, 2, "the second instance to join the group")
            assert HELD in _partitions(two, 1), two
            [taken, *_] = _partitions(two, 2)  # from the first instance, mid-batch
            kept = [p for p in _partitions(two, 1) if p != HELD]
            sent = [await _publish(caravan, order, taken) for order in orders]
            await caravan.consumed("inventory", *sent)  # handled and committed by the second
            left = (await committed_offsets(bootstrap, GROUP))[TopicPartition(TOPIC, taken)]
            assert left == sent[-1].offset + 1, (left, sent)
            await asyncio.to_thread(caravan.procs.stop, ["inventory-2"])
            started_two = False
            one = await _group(caravan, 1, "the second instance to leave the group")
            assert taken in _partitions(one, 1), one
        # The held batch ends; the record the first instance is given again after it (the held
        # order, found in the inbox) is committed a second or so later.
        await caravan.consumed("inventory", held_at)
        committed = await committed_offsets(bootstrap, GROUP)
        assert committed[TopicPartition(TOPIC, taken)] == left, (
            f"partition {taken}'s committed offset moved back from {left}"
            f" to {committed[TopicPartition(TOPIC, taken)]}"
        )
    finally:
        if started_two:
            await asyncio.to_thread(caravan.procs.stop, ["inventory-2"])
        if "inventory" not in caravan.procs.procs:
            caravan.procs.start(("inventory",))
            await asyncio.to_thread(system.wait_ready, caravan.procs)

    reserved = times_reserved(caravan, [held.order_id, *(o.order_id for o in orders)])
    assert set(reserved.values()) == {1}, reserved
    rows = await caravan.sql(
        "select sku, available, reserved from inventory.lots where sku = any(:s) order by sku",
        s=[held_sku, free_sku],
    )
    expected = {held_sku: (STOCK - 1, 1), free_sku: (STOCK - ORDERS, ORDERS)}
    assert {r.sku: (r.available, r.reserved) for r in rows} == expected
    counted = {
        outcome: await caravan.gauge(
            "inventory",
            "caravan_records_consumed_total",
            service="inventory",
            topic=TOPIC,
            outcome=outcome,
        )
        for outcome in ("handled", "duplicate", "skipped", "dead_lettered")
    }
    # The first instance: the held order handled, then found in the inbox when given again; the
    # records it skipped, in the held batch, and again those of the partitions it kept (the
    # second instance skipped the one of the partition it took).
    skipped = 2 + len(kept)
    assert counted == {"handled": 1, "duplicate": 1, "skipped": skipped, "dead_lettered": 0}, (
        counted
    )
