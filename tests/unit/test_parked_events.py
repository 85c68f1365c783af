"""What ``caravan parked list`` says of an event parked until its order's ``order.placed``:
how long it has waited, and why, as orders knows the order."""

from datetime import UTC, datetime, timedelta

from caravan.ops.parked import Parked, Placed, age

AT = datetime(2026, 12, 6, 9, 0, 0, tzinfo=UTC)


def parked(order: Placed | None) -> Parked:
    return Parked("platform", "caravan/orders|e-1", "e-1", "order.cancelled", "o-1", "t", AT, order)


def test_an_event_of_an_order_orders_never_placed_waits_for_nothing() -> None:
    said = parked(None).why(AT + timedelta(days=3, hours=4, minutes=5))
    assert said == (
        "waits 3d 4h for the order.placed of o-1: orders has no such order, so none will come"
        " (a forged or mistaken event, or an order lost before orders placed it)"
    )


def test_an_event_of_an_order_orders_placed_waits_for_its_order_placed_on_the_way() -> None:
    said = parked(Placed("pending", AT - timedelta(seconds=30))).why(AT + timedelta(minutes=12))
    assert said == (
        "waits 12m 0s for the order.placed of o-1: orders placed it 2026-12-06T08:59:30+00:00"
        " (pending), its order.placed not handled by platform yet (behind or paused, or"
        " dead-lettered: caravan dlq list --topic orders.events.v1)"
    )


def test_a_wait_is_said_in_its_two_largest_units() -> None:
    waits = [timedelta(seconds=40), timedelta(minutes=7, seconds=12), timedelta(hours=2, minutes=5)]
    assert [age(w) for w in waits] == ["40s", "7m 12s", "2h 5m"]
