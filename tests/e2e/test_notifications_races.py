"""Two transactions of notifications about one order at once, as two instances make them (each
reading one of the topics that carry an order's events, or in a rebalance), on real
PostgreSQL: whichever comes second finds what the first did, under the order's lock
(``services/notifications/handlers.py``). A seller's text needs an order's ``stock.reserved``
and its ``order.confirmed``; the buyer's text of an outcome that came before its
``order.placed`` is parked until the ``order.placed`` takes it. The first transaction is held
open, its work done, until the second waits for it (or ends: the race lost); the texts are
then each queued once. The notifications service is stopped meanwhile."""

import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import date, time
from functools import partial

import pytest
from sqlalchemy import text

from services.notifications.domain.delivery import QuietHours
from services.notifications.entrypoints.subscribers import subscriptions
from services.notifications.handlers import _LOCKS as LOCKS
from shared.events.envelope import EventData, new_event
from shared.events.inventory import ReservedLine, StockReserved
from shared.events.orders import PaymentRequest
from shared.events.payments import InstalmentDue, PaymentRefunded, PaymentVoided
from shared.events.registry import Parsed, parse_record
from shared.messaging.uow import UnitOfWork
from shared.topics import Topic
from tests.harness import System, handled_alone, order_events, ref

SUBSCRIPTIONS = subscriptions(QuietHours(time(0), time(0)))
handle = partial(handled_alone, SUBSCRIPTIONS)
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


async def test_a_batch_of_loan_events_locks_its_orders_at_once_before_any_handler(
    uow: UnitOfWork,
) -> None:
    """A batch of loan events (a reminder, a repayment, a void, a refund: each parks or
    marks under its order's lock) takes every one of its orders' locks before its first
    handler, in the one statement an order events batch takes its own in, so in one order.
    Taken one by one as each handler came to its record, in the batch's order, a batch could
    hold one order's lock while an order events batch of another instance held the next and
    waited for the first: a deadlock, which PostgreSQL ends by undoing one (retried)."""
    sub = next(s for s in SUBSCRIPTIONS if s.topic is Topic.PAYMENT_EVENTS)
    orders = [str(uuid.uuid4()) for _ in range(4)]
    loan = f"L-{secrets.token_hex(4)}"
    due = InstalmentDue(
        order_id=orders[0],
        loan_id=loan,
        buyer_id="t-rich",
        number=1,
        due=date(2026, 12, 7),
        amount_fen=1000,
        stage="today",
    )
    refunded = PaymentRefunded(
        order_id=orders[2], amount_fen=1000, reference="T-1", reason="t", recorded_by="t"
    )
    events = (
        due,
        PaymentVoided(order_id=orders[1], loan_id=loan, amount_fen=1000),
        refunded,
        PaymentVoided(order_id=orders[3], amount_fen=0),  # prepaid: locked all the same
    )
    held = text(
        "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
        " and classid = :lock_class and objsubid = 2"
    )
    async with uow.begin() as tx:
        assert sub.prefetch is not None, "the payment events' subscription has no prefetch"
        await sub.prefetch(tx, [parsed(e, "caravan/payments") for e in events])
        assert await tx.conn.scalar(held, {"lock_class": LOCKS.lock_class}) == len(orders)
