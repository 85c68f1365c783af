"""Two transactions of notifications about one order at once, as two instances make them (each
reading one of the topics that carry an order's events, or in a rebalance), on real
PostgreSQL: whichever comes second finds what the first did, under the order's lock
(``services/notifications/handlers.py``). A seller's text needs an order's ``stock.reserved``
and its ``order.confirmed``; the buyer's text of an outcome that came before its
``order.placed`` is parked until the ``order.placed`` takes it. The first transaction is held
open, its work done, until the second waits for it (or ends: the race lost); the texts are
then each queued once. The notifications service is stopped meanwhile."""

import secrets
from collections.abc import AsyncIterator
from datetime import time
from functools import partial

import pytest

from services.notifications.domain.delivery import QuietHours
from services.notifications.entrypoints.subscribers import subscriptions
from shared.events.envelope import EventData, new_event
from shared.events.inventory import ReservedLine, StockReserved
from shared.events.orders import PaymentRequest
from shared.events.registry import Parsed, parse_record
from shared.messaging.uow import UnitOfWork
from tests.harness import System, handled_alone, order_events, ref

handle = partial(handled_alone, subscriptions(QuietHours(time(0), time(0))))
SELLER = ("t-seller-1", "+8613000009001")  # the test seed's (tests/conftest.py)


@pytest.fixture
async def uow(caravan: System) -> AsyncIterator[UnitOfWork]:
    async with caravan.alone("notifications") as uow:
        yield uow


def parsed(data: EventData, source: str) -> Parsed:
    return parse_record(data.topic, new_event(data, source=source).to_json())


def reserved(order_id: str) -> StockReserved:
    line = ReservedLine(
        sku="T-PEPPER", quantity=1, unit_price_fen=1500, seller_id=SELLER[0], lots=[]
    )
    return StockReserved(
        order_id=order_id,
        buyer_id="t-rich",
        payment=PaymentRequest(method="prepaid"),
        lines=[line],
        total_fen=1500,
    )


# Per case: the records handled before the race, its first and its second, by name.
CASES = {
    "reservation, then its confirmation": (["placed"], "reserved", "confirmed"),
    "confirmation, then its reservation": (["placed"], "confirmed", "reserved"),
    "outcome parked, then its order.placed": ([], "confirmed", "placed"),
    "order.placed, then its outcome": ([], "placed", "confirmed"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_two_transactions_of_one_order_at_once_queue_each_text_once(
    caravan: System, uow: UnitOfWork, case: str
) -> None:
    before, first, second = CASES[case]
    phone = f"+86139{secrets.randbelow(10**8):08d}"
    events = order_events(ref("RACE"), phone)
    order_id = events.placed.order_id
    records = {
        "placed": parsed(events.placed, "caravan/orders"),
        "confirmed": parsed(events.confirmed, "caravan/orders"),
        "reserved": parsed(reserved(order_id), "caravan/inventory"),
    }
    for name in before:
        async with uow.begin() as tx:
            await handle(tx, records[name])
    second_done, waited = await caravan.raced(
        uow, partial(handle, record=records[first]), partial(handle, record=records[second])
    )
    second_done.result()

    texts = await caravan.sql(
        'select purpose, "to" from notifications.sms where order_id = :o order by purpose',
        o=order_id,
    )
    sellers = [("new_order", SELLER[1])] if "reserved" in (first, second) else []
    assert [tuple(t) for t in texts] == [*sellers, ("order_confirmed", phone)]
    parked = "select count(*) from notifications.parked where order_id = :o"
    assert await caravan.scalar(parked, o=order_id) == 0
    assert waited, "the second transaction did not wait for the first: no race was made"
