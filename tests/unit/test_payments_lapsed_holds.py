"""Whether payments may still charge or lend for a reservation (services/payments/domain/
hold.py): not once its hold has lapsed, as ``stock.reserved`` says (``held_until``)."""

from datetime import UTC, datetime, timedelta

import pytest

from services.payments.domain.hold import hold_lapsed
from shared.events.inventory import StockReserved
from shared.events.orders import PaymentRequest

HELD_UNTIL = datetime(2026, 11, 30, 8, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "lapsed"),
    [
        (HELD_UNTIL - timedelta(microseconds=1), False),
        # From held_until on, as orders' sweep takes an order due at its deadline_at.
        (HELD_UNTIL, True),
        (HELD_UNTIL + timedelta(minutes=1), True),
    ],
)
def test_a_hold_has_lapsed_from_its_held_until_on(now: datetime, lapsed: bool) -> None:
    assert hold_lapsed(HELD_UNTIL, now) is lapsed


def test_a_reservation_of_an_inventory_that_said_no_time_is_paid_for_as_before() -> None:
    """A ``stock.reserved`` of before 2026-12-05 has no ``held_until``: it reads as ``None``
    and is never taken for lapsed, however late it is read."""
    old = StockReserved.model_validate(
        {
            "order_id": "order-1",
            "buyer_id": "buyer-0001",
            "payment": {"method": "prepaid"},
            "lines": [],
            "total_fen": 0,
        }
    )
    assert old.payment == PaymentRequest(method="prepaid")
    assert old.held_until is None
    assert not hold_lapsed(old.held_until, datetime.max.replace(tzinfo=UTC))
