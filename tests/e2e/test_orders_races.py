"""An overdue order's deadline met by two orders instances at once, on real PostgreSQL: each
instance sweeps the pending orders past their deadline (``expire_due``), the rows it takes
locked, those another holds passed over; and a sweep meeting the authorisation that confirms
the order. Each order ends once (docs/guarantees.md, Races: one terminal state). The orders
service is stopped meanwhile, payments too (the order stays pending, its stock held)."""

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from services.orders.entrypoints.subscribers import subscriptions
from services.orders.handlers import expire_due
from shared.events.envelope import new_event
from shared.events.registry import parse_record
from shared.topics import Topic
from tests.e2e.test_orders_saga import orders_seed, payments_stopped, pending
from tests.harness import System, handled_alone

ends = ("order.confirmed", "order.cancelled")
SUBSCRIPTIONS = subscriptions(timedelta(minutes=15))  # the deadline of requests: none here


@pytest.mark.parametrize("first", ["sweep", "authorisation"])
async def test_a_deadline_swept_by_two_instances_or_met_by_an_authorisation_ends_an_order_once(
    caravan: System, first: str
) -> None:
    await caravan.seed(orders_seed())
    async with payments_stopped(caravan):
        authorized = await pending(caravan, f"ORD-SWEPT-{first.upper()}")
        order_id = authorized.order_id
        record = parse_record(
            Topic.PAYMENT_EVENTS, new_event(authorized, source="caravan/payments").to_json()
        )
        authorizing = partial(handled_alone, SUBSCRIPTIONS, record=record)
        async with caravan.alone("orders") as uow:
            stored = "select status from orders.orders where order_id = :o"
            await caravan.until(lambda: caravan.scalar(stored, o=order_id), "the order stored")
            await caravan.execute(
                "update orders.orders set deadline_at = now() - interval '1 second'"
                " where order_id = :o",
                o=order_id,
            )
            sweeping = partial(expire_due, now=datetime.now(UTC))
            steps = (sweeping, sweeping) if first == "sweep" else (authorizing, sweeping)
            second, _ = await caravan.raced(uow, *steps)
            ended = [e for e in await caravan.timeline(order_id) if e in ends]
    assert ended == (["order.cancelled"] if first == "sweep" else ["order.confirmed"])
    for end in ends:
        count = await caravan.outbox_count("orders", Topic.ORDER_EVENTS, end, order_id=order_id)
        assert count == ended.count(end), (end, count)
    assert order_id not in second.result()  # the other instance's, passed over
