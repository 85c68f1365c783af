"""An operator voids an order's payment: of an order the orders service never had, or of a
confirmed order after its sale.

Whoever can write a topic payments trusts (a forged ``stock.reserved``, a copy of a platform's
order under another order id) makes payments lend or take money for an order that orders
never had (the history checker's ``money_without_an_order``). Orders cannot cancel it (it
answers 404), so no ``order.cancelled`` comes to void it. Nor does one come for a confirmed
order whose buyer was refunded after the sale (a platform's refund after delivery, a county
centre refunding spoiled produce): orders cancels no confirmed order, and nothing follows its
``order.confirmed``. :func:`void_by_operator` does for either what a cancellation would
(:func:`~services.payments.handlers.void_payment`): the loan voided and its credit given
back, its instalments no longer due nor reminded, what the buyer repaid owed back to them; a
prepaid charge handed to the gateway loop to void by key (``void_refused`` when the gateway
refuses, settled already: refunded by hand); a platform's collection reversed (the platform
refunds its buyer itself); the sellers' payables cancelled; ``payment.voided`` said. Orders
records it on the order's timeline and the order stays as it is (a confirmed one confirmed:
its stock stays sold, produce not returned to a lot).

Payments reads no table of the orders service: the caller (``caravan payments void-unplaced``
or ``void-sold``) asks the orders API first, and the route takes its word of what it
answered (``orders_answered``: 404, or ``confirmed``). The void is for good: a
``stock.reserved`` of the order read after it (a redelivery, a replay, or a genuine order's
reservation come late) finds the payment and lends or charges nothing, and such an order, if
orders has it and has not confirmed it, is never authorised: it expires at its deadline, its
stock released, its buyer charged nothing."""

from datetime import UTC, datetime

from services.payments.adapters.tables import payments
from services.payments.handlers import VOIDABLE, void_payment
from services.payments.prepaid import Change, Refused, payment_view
from shared.messaging.uow import Tx

UNPLACED, AFTER_SALE = "unplaced", "voided_after_sale"
"""The column prefixes a void is recorded under: an order orders never had, or one sold."""
VOIDED_AS = {
    UNPLACED: ("as of an order the orders service never had", "404: `void-unplaced`"),
    AFTER_SALE: ("after the sale, its order confirmed", "confirmed: `void-sold`"),
}
"""How an operator's void of each kind is said, and the word of orders it was made on."""


class NotVoidable(Refused):
    """The order's payment holds no money to void: declined, cancelled, voided already (by
    its order's cancellation), or owed back by hand (``void_refused``, ``refunded``); or an
    operator voided it the other way (:class:`VoidedTheOtherWay`)."""

    title = "Payment not voided"


class VoidedTheOtherWay(NotVoidable):
    """An operator voided the payment before on the other word of orders (as never placed,
    asked now as confirmed, or the other way round): it is voided, not still charged, as "not
    voided" read."""

    title = "Payment voided already, the other way"


async def void_by_operator(
    tx: Tx, order_id: str, reason: str, voided_by: str, *, after_sale: bool
) -> Change | None:
    """Void the payment of ``order_id`` (an order the orders service never had, or, if
    ``after_sale``, a confirmed one whose buyer was refunded after the sale), and record when,
    by whom (``voided_by``: the operator's token) and why, under ``unplaced_*`` or
    ``voided_after_sale_*``. A payment an operator voided before the same way is answered as
    it is, changing nothing (the first reason stands); None: no payment for the order;
    :class:`NotVoidable`: it holds nothing to void, or, ``after_sale``, it is not
    ``authorized`` (no confirmed order's payment is anything else before its void), or an
    operator voided it the other way (the caller's word of what orders answered is not the
    word it was voided on: saying how, when, by whom and why)."""
    before = await payment_view(tx.conn, order_id, lock=True)
    if before is None:
        return None
    asked = AFTER_SALE if after_sale else UNPLACED
    for kept in (UNPLACED, AFTER_SALE):
        if before[f"{kept}_at"] is None:
            continue
        if kept == asked:
            return Change(before, before)
        (how, word), (asked_how, _) = VOIDED_AS[kept], VOIDED_AS[asked]
        raise VoidedTheOtherWay(
            f"the payment of order {order_id} was voided {how} (orders_answered {word}) at"
            f" {before[f'{kept}_at'].isoformat(timespec='seconds')} by {before[f'{kept}_by']}"
            f" ({before[f'{kept}_reason']}); asked now {asked_how}, it is not voided again:"
            " nothing changed"
        )
    if after_sale and before["status"] != "authorized":
        # Orders confirms an order only once its payment.authorized is read: a charge in
        # flight or a platform's collection awaited is a pending order's (a word mistaken).
        raise NotVoidable(
            f"the payment of order {order_id} is {before['status']}, not authorized: a"
            " confirmed order's payment is, so orders has not confirmed this one (`caravan"
            " payments void-sold` asks it first)"
        )
    row = (await tx.conn.execute(VOIDABLE.where(payments.c.order_id == order_id))).one()
    if not await void_payment(tx, order_id, row, caused_by=None, unplaced=not after_sale):
        raise NotVoidable(
            f"the payment of order {order_id} is {before['status']}: it holds no money to void"
        )
    kept = AFTER_SALE if after_sale else UNPLACED
    tx.update_later(
        payments,
        "order_id",
        {
            "order_id": order_id,
            f"{kept}_at": datetime.now(UTC),
            f"{kept}_by": voided_by,
            f"{kept}_reason": reason,
        },
    )
    await tx.flush()
    after = await payment_view(tx.conn, order_id)
    assert after is not None  # locked above
    return Change(before, after)
