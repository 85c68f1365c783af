"""An operator voids the payment of an order the orders service never had.

Whoever can write a topic payments trusts (a forged ``stock.reserved``, a copy of a platform's
order under another order id) makes payments lend or take money for an order that orders
never had (the history checker's ``money_without_an_order``). Orders cannot cancel it (it
answers 404), so no ``order.cancelled`` comes to void it: :func:`void_unplaced` does here
what that cancellation would (:func:`~services.payments.handlers.void_payment`): the loan
voided and its credit given back, its instalments no longer due nor reminded, what the buyer
repaid owed back to them; a prepaid charge handed to the gateway loop to void by key; a
platform's collection reversed; the sellers' payables cancelled; ``payment.voided`` said.

Payments reads no table of the orders service: the caller (``caravan payments
void-unplaced``) asks the orders API first, and the route takes its word that it answered
404 (``orders_answered``). The void is for good: a ``stock.reserved`` of the order read after
it (a redelivery, a replay, or a genuine order's reservation come late) finds the payment and
lends or charges nothing, and such an order, if orders has it, is never authorised: it
expires at its deadline, its stock released, its buyer charged nothing."""

from datetime import UTC, datetime

from services.payments.adapters.tables import payments
from services.payments.handlers import VOIDABLE, void_payment
from services.payments.prepaid import Change, payment_view
from shared.messaging.uow import Tx


class NotVoidable(Exception):
    """The order's payment holds no money to void: declined, cancelled, voided already (by
    its order's cancellation), or owed back by hand (``void_refused``, ``refunded``)."""


async def void_unplaced(tx: Tx, order_id: str, reason: str, voided_by: str) -> Change | None:
    """Void the payment of ``order_id``, an order the orders service never had, and record
    when, by whom (``voided_by``: the operator's token) and why. A payment voided so before
    is answered as it is, changing nothing (the first reason stands); None: no payment for
    the order; :class:`NotVoidable`: it holds nothing to void."""
    before = await payment_view(tx.conn, order_id, lock=True)
    if before is None:
        return None
    if before["unplaced_at"] is not None:
        return Change(before, before)
    row = (await tx.conn.execute(VOIDABLE.where(payments.c.order_id == order_id))).one()
    if not await void_payment(tx, order_id, row, caused_by=None):
        raise NotVoidable(
            f"the payment of order {order_id} is {before['status']}: it holds no money to void"
        )
    tx.update_later(
        payments,
        "order_id",
        {
            "order_id": order_id,
            "unplaced_at": datetime.now(UTC),
            "unplaced_by": voided_by,
            "unplaced_reason": reason,
        },
    )
    await tx.flush()
    after = await payment_view(tx.conn, order_id)
    assert after is not None  # locked above
    return Change(before, after)
