"""A dead letter redriven twice (``caravan dlq redrive``, then ``--again``) is acted on once
(docs/guarantees.md, Dead letters): inventory dead-letters an order's ``order.cancelled`` (a
check on its holds that the release breaks, for this test alone), the letter is redriven and
the stock released; sent again with ``--again``, inventory finds the event in its inbox and
changes nothing."""

import functools

from shared.topics import Topic
from tests.e2e.test_inventory_holds import _counters, _hold, _seed
from tests.e2e.test_ops import cli
from tests.harness import System

DUPLICATES = {
    "service": "inventory",
    "topic": Topic.ORDER_EVENTS.value,
    "outcome": "duplicate",
}


async def test_a_dead_letter_redriven_again_is_acted_on_once(no_payments: System) -> None:
    caravan = no_payments
    sku = await _seed(caravan, {"A": 5})
    order_id = await _hold(caravan, sku, 2)
    check = f"test_redrive_once_{order_id[-8:]}"
    await caravan.execute(
        f"alter table inventory.reservations add constraint {check} check"
        f" (order_id <> '{order_id}' or status = 'reserved') not valid"
    )
    try:
        cancelled = await caravan.client.post(f"/orders/{order_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        [letter] = await caravan.wait_for(
            lambda: caravan.log.letters(Topic.ORDER_EVENTS, order_id, "inventory")
        )
    finally:
        await caravan.execute(f"alter table inventory.reservations drop constraint {check}")
    assert await _counters(caravan, sku) == {"A": (3, 2, 0, 0)}  # held still
    named = f"{letter.topic}:{letter.partition}:{letter.offset}"

    def released() -> list[object]:
        found = caravan.log.events(Topic.INVENTORY_EVENTS, type="stock.released")
        return [e for e in found if e.data["order_id"] == order_id]

    first = await cli(caravan, "dlq", "redrive", named)
    assert first.returncode == 0, first.stdout + first.stderr
    await caravan.wait_for(released)
    assert await _counters(caravan, sku) == {"A": (5, 0, 0, 0)}

    found_before = await caravan.gauge("inventory", "caravan_records_consumed_total", **DUPLICATES)
    again = await cli(caravan, "dlq", "redrive", named, "--again")
    assert again.returncode == 0, again.stdout + again.stderr
    await caravan.until(
        functools.partial(
            caravan.gauge, "inventory", "caravan_records_consumed_total", **DUPLICATES
        ),
        "inventory to find the letter's event, sent again, in its inbox",
        ready=lambda found: found > found_before,
    )
    assert len(released()) == 1
    assert await _counters(caravan, sku) == {"A": (5, 0, 0, 0)}
    status = "select status from inventory.reservations where order_id = :o"
    assert await caravan.scalar(status, o=order_id) == "released"
