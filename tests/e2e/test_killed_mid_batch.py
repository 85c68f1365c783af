"""A service killed mid-batch, for certain: inventory, given a backlog of orders, dies at a
failpoint (``shared/faults.py``, as ``kill -9`` would leave it) with its first batch
handled and its transaction not committed, or committed and its offsets not yet told to
Kafka. Started again, it is given the batch again: what was not committed is handled (a crash
means redelivery, never loss), what was is found in the inbox and changes nothing (a
duplicate is a no-op). Each order ends once, confirmed, its stock reserved once."""

import asyncio
import uuid

import pytest

from caravan import system
from shared.faults import (
    CONSUMER_AFTER_COMMIT,
    CONSUMER_BEFORE_COMMIT,
    FAILPOINT_AFTER_VAR,
    FAILPOINT_VAR,
    KILLED_EXIT_CODE,
)
from shared.topics import Topic
from tests.e2e.inventory_seed import one_sku_seed, prepaid_units
from tests.harness import System

ORDERS = 6
STOCK = 50
BUYER = {"id": "killed-batch-buyer", "phone": "+8613900007031", "locale": "en"}


async def reservations(caravan: System, order_ids: list[str]) -> int:
    """How many of the orders inventory has a reservation of, committed."""
    query = "select count(*) from inventory.reservations where order_id = any(:ids)"
    return int(await caravan.scalar(query, ids=order_ids))


def times_reserved(caravan: System, order_ids: list[str]) -> dict[str, int]:
    """How many ``stock.reserved`` inventory published of each of the orders."""
    return {
        order_id: len(
            caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.reserved", order_id=order_id)
        )
        for order_id in order_ids
    }


@pytest.mark.parametrize("where", [CONSUMER_BEFORE_COMMIT, CONSUMER_AFTER_COMMIT])
async def test_inventory_killed_mid_batch_loses_nothing_and_does_nothing_twice(
    caravan: System, where: str
) -> None:
    sku = f"KILLED-{uuid.uuid4().hex[:8]}"
    await caravan.seed(
        one_sku_seed(sku, 100, {"A": (STOCK, -10, 10)}, [{**BUYER, "credit_limit_fen": 10**9}])
    )
    requests = prepaid_units(sku, BUYER, [f"{sku}-{n}" for n in range(ORDERS)])
    # A backlog: every order placed while inventory is away, its first batch takes them.
    await asyncio.to_thread(caravan.procs.stop, ["inventory"])
    try:
        await asyncio.gather(*(caravan.request(r) for r in requests))
        order_ids = list(await asyncio.gather(*(caravan.placed(r.order_ref) for r in requests)))
        await caravan.relaunch(("inventory",), **{FAILPOINT_VAR: where, FAILPOINT_AFTER_VAR: "1"})
        proc = caravan.procs.procs.pop("inventory")
        assert await asyncio.to_thread(proc.wait, 90) == KILLED_EXIT_CODE
        committed = await reservations(caravan, order_ids)
    finally:
        if "inventory" not in caravan.procs.procs:
            caravan.procs.start(("inventory",))
            await asyncio.to_thread(system.wait_ready, caravan.procs)
    if where == CONSUMER_BEFORE_COMMIT:
        assert committed == 0, "the batch's transaction committed before the failpoint"
    else:
        assert committed > 0, "no reservation of the batch committed before the failpoint"

    for order_id in order_ids:
        assert (await caravan.outcome(order_id, timeout=90)).type == "order.confirmed"
        assert await caravan.one_terminal(order_id) == "order.confirmed"
    await caravan.until(
        lambda: caravan.sql(
            "select available, reserved, sold from inventory.lots where sku = :s", s=sku
        ),
        "every order's stock sold, once",
        60,
        ready=lambda rows: [tuple(r) for r in rows] == [(STOCK - ORDERS, 0, ORDERS)],
    )
    reserved = times_reserved(caravan, order_ids)
    assert set(reserved.values()) == {1}, reserved
    # The records of the batch were delivered again: those whose effects had committed were
    # found in the inbox, the others handled.
    found = await caravan.gauge(
        "inventory",
        "caravan_records_consumed_total",
        service="inventory",
        topic=Topic.ORDER_EVENTS.value,
        outcome="duplicate",
    )
    assert found >= committed, f"{committed} committed before the kill, {found} found again"
