"""Use cases of the payments service on the saga's events: authorise on ``stock.reserved``,
void on ``order.cancelled``. Each order has at most one payment row, so at most one
authorisation, one loan and one charge.

Microloans are decided here, in the handler's transaction, under a row lock on the buyer's
credit line (so concurrent orders of one buyer, on any number of instances, are checked one
after the other). A batch of ``stock.reserved`` locks its buyers' credit lines and reads
what they owe in two statements (:func:`prefetch_payments`); the transaction's
identity map then carries each buyer's credit from one order of the batch to the next.
Prepaid orders are only *recorded* here as ``charging``: the gateway is called outside any
transaction by :mod:`services.payments.prepaid`. A prepaid order a marketplace platform
placed (``source`` ``platform/<app>``) was paid on the platform: it is authorised here,
without the gateway (which would charge its buyer a second time), once the platform adapter
has said so on its own topic (``platform.order_paid``), since any publisher of orders could
name a platform's source. A ``stock.reserved`` read after its hold lapsed (``held_until``:
payments lagged behind the order's deadline) is neither charged nor lent for: the order
cannot be confirmed any more, and a charge would only be voided after it.
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from prometheus_client import Counter
from sqlalchemy import ARRAY, String, bindparam, column, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.payments.adapters import ledger as ledger_store
from services.payments.adapters.tables import (
    LOAN_ACTIVE,
    credit_lines,
    instalments,
    loans,
    payables,
    payments,
    platform_paid,
    repayments,
)
from services.payments.domain import ledger
from services.payments.domain.credit import fits, schedule
from services.payments.domain.hold import hold_lapsed
from shared import days
from shared.auth import audit
from shared.db import driver
from shared.events.inventory import StockReserved
from shared.events.orders import OrderCancelled, PaymentMethod, ScheduledInstalment, platform_app
from shared.events.payments import PaymentAuthorized, PaymentDeclined, PaymentVoided
from shared.events.platform import PlatformOrderPaid
from shared.events.registry import Parsed
from shared.ids import new_id
from shared.messaging.parking import OrderLocks
from shared.messaging.uow import Tx
from shared.metrics import owned_by, start_at_zero
from shared.seed import Loaded, SeedFile
from shared.telemetry import current_trace_headers

log = logging.getLogger(__name__)

GATEWAY_WORK = "payments.gateway"
"""Signal of a transaction that left a charge or a void for the gateway loop."""


def disbursement_txn(loan_id: str) -> str:
    return f"disburse:{loan_id}"


def charge_txn(order_id: str) -> str:
    return f"charge:{order_id}"


def void_txn(order_id: str) -> str:
    return f"void:{order_id}"


PAYMENT = "payments.payment"


_PAYMENTS = driver.locked_by_key(select(payments.c.order_id), payments.c.order_id)


async def lock_payments(tx: Tx, order_ids: Iterable[str]) -> None:
    """Lock these orders' payment rows (those that exist), in one statement, in order id
    order: every batch that locks payments locks them so, and waits for another rather than
    deadlocking with it."""
    todo = tx.unknown(PAYMENT, order_ids)
    if not todo:
        return
    rows = await driver.fetch(tx.conn, _PAYMENTS, keys=todo)
    tx.remember(PAYMENT, todo, {r.order_id: True for r in rows})


async def _claim_payment(tx: Tx, order_id: str, **values: object) -> bool:
    """Create the order's payment row (written at commit); False if the order already has
    one. Another batch making it at once (two instances, each reading one of the topics that
    carry the order's events, or a rebalance) waits for this one's order lock
    (:func:`prefetch_payments`), and then finds it. Should a row be written meanwhile all the
    same (an instance of a version before that lock), this one fails at commit, a race lost
    (a warning: :attr:`shared.db.engine.Kind.RACE_LOST`), and is retried, and then sees it."""
    await lock_payments(tx, [order_id])
    if tx.identity[PAYMENT, order_id]:
        return False
    tx.identity[PAYMENT, order_id] = True
    tx.insert_later(payments, {"order_id": order_id, **values})
    return True


def _payables(data: StockReserved) -> dict[str, int]:
    """What each seller is owed for the order: the sum of their lines."""
    owed: dict[str, int] = {}
    for line in data.lines:
        owed[line.seller_id] = owed.get(line.seller_id, 0) + line.quantity * line.unit_price_fen
    return owed


def _record_payables(tx: Tx, order_id: str, owed: dict[str, int], status: str) -> None:
    for seller_id, amount in sorted(owed.items()):
        tx.insert_later(
            payables,
            {"order_id": order_id, "seller_id": seller_id, "amount_fen": amount, "status": status},
        )


CREDIT = "payments.credit"


@dataclass
class Credit:
    """A buyer's credit line as this transaction sees it, locked (``limit_fen`` None: none)."""

    limit_fen: int | None
    outstanding_fen: int


_CREDIT_LINES = driver.locked_by_key(
    select(credit_lines.c.buyer_id, credit_lines.c.credit_limit_fen), credit_lines.c.buyer_id
)
OWED = (
    select(loans.c.buyer_id, func.coalesce(func.sum(loans.c.outstanding_fen), 0).label("owed"))
    .where(driver.any_of(loans.c.buyer_id), LOAN_ACTIVE)
    .group_by(loans.c.buyer_id)
)
"""What the active loans of the buyers ``:keys`` still owe, by buyer: a microloan's credit
check (through ``loans_active_by_buyer``)."""


async def _load_credit(tx: Tx, buyer_ids: Iterable[str]) -> None:
    """Lock these buyers' credit lines (in buyer order) and sum what their loans owe."""
    todo = tx.unknown(CREDIT, buyer_ids)
    if not todo:
        return
    limits = await driver.fetch(tx.conn, _CREDIT_LINES, keys=todo)
    limit_of: dict[str, int] = {r.buyer_id: r.credit_limit_fen for r in limits}
    owed = await driver.fetch(tx.conn, OWED, keys=todo)
    owed_by: dict[str, int] = {r.buyer_id: int(r.owed) for r in owed}
    found = {b: Credit(limit_of.get(b), owed_by.get(b, 0)) for b in todo}
    tx.remember(CREDIT, todo, found)


LOCKS = OrderLocks(0x9A9)
"""Payments' advisory locks: of each platform order (``<app>|<its ref>``), so that its
reservations and the adapter's word that it was paid are handled one at a time
(:func:`_collected_by_platform`, :func:`on_platform_order_paid`); and of each order a batch
may make a payment for (its id, which has no ``|``: :func:`prefetch_payments`)."""


def _platform_order(data: object) -> tuple[str, str] | None:
    """The platform order (app, ref) whose lock the record's handler takes: a prepaid order a
    platform placed, or the adapter's word that one was paid; None: none."""
    if isinstance(data, StockReserved) and data.payment.method != "prepaid":
        return None
    if not isinstance(data, StockReserved | PlatformOrderPaid):
        return None
    app = platform_app(data.source)
    if app is None or len(app) > 64 or data.order_ref is None:
        return None
    return app, data.order_ref


async def _lock_orders(
    tx: Tx, platform_orders: Iterable[tuple[str, str]], order_ids: Iterable[str] = ()
) -> None:
    """Take :data:`LOCKS` of ``platform_orders`` and ``order_ids`` in one statement, in one
    order. One at a time for a platform order: its reservation and the adapter's word that it
    was paid, handled at once by two instances, each missed the other's uncommitted row; and
    for an order whose payment a batch may make (:func:`prefetch_payments`)."""
    platform_keys = (f"{app}|{order_ref}" for app, order_ref in platform_orders)
    await LOCKS.lock(tx, [*platform_keys, *order_ids])


async def _awaiting(tx: Tx, platform_orders: set[tuple[str, str]]) -> list[str]:
    """The orders whose payments await these platform orders' word (through the index
    ``payments_awaiting_platform``). Their locks held, none is added meanwhile: only their
    reservations add one."""
    if not platform_orders:
        return []
    found = await tx.conn.execute(
        select(payments.c.order_id).where(
            tuple_(payments.c.collected_by, payments.c.order_ref).in_(sorted(platform_orders)),
            payments.c.status == "awaiting",
        )
    )
    return list(found.scalars())


async def prefetch_payments(tx: Tx, batch: Sequence[Parsed]) -> None:
    """Lock the batch's platform orders and its orders (reserved or cancelled), whose payments
    it may make (:data:`LOCKS`, one statement), then the payment rows of those orders and of
    those awaiting its platforms' word, in order id order, then the credit lines of its
    microloan orders: one statement each, and one to find the payments awaiting. Every batch
    takes them in this order, and the gateway loop its payments in order id order: none waits
    for a lock another holds while holding one that other waits for. A batch of cancellations
    locked each payment as it came to it, where the gateway loop locks in order id order; a
    reservation read again locked its payment before its platform order, where the
    platform's word locks them the other way; two batches locked their platform orders in
    their records' order; and two batches making the same orders' payments (the reservations
    read by one instance, the cancellations by another) wrote them in their records' order,
    and a subscription's before the next one's: each could deadlock, one of the two rolled
    back. A payment that does not exist yet has no row to lock: its order's lock stands for
    it, and a batch that waited for it then finds the payment the other made."""
    orders = [p.data.order_id for p in batch if isinstance(p.data, StockReserved | OrderCancelled)]
    platform_orders = (o for p in batch if (o := _platform_order(p.data)))
    await _lock_orders(tx, platform_orders, orders)
    paid = {
        o for p in batch if isinstance(p.data, PlatformOrderPaid) and (o := _platform_order(p.data))
    }
    awaiting = await _awaiting(tx, paid)
    await lock_payments(tx, [*orders, *awaiting])
    await _load_credit(
        tx,
        (
            p.data.buyer_id
            for p in batch
            if isinstance(p.data, StockReserved) and p.data.payment.method != "prepaid"
        ),
    )


async def set_payables(tx: Tx, order_id: str, status: str) -> dict[str, int]:
    """Set the status of the order's payables; returns them (seller → fen)."""
    return (await set_payables_of(tx, {order_id: status}))[order_id]


_GIVEN = (
    func.unnest(
        bindparam("order_ids", type_=ARRAY(String())),
        bindparam("statuses", type_=ARRAY(String())),
    )
    .table_valued(column("order_id", String()), column("status", String()))
    .render_derived(name="given")
)
_SET_PAYABLES = (
    update(payables)
    .where(payables.c.order_id == _GIVEN.c.order_id)
    .values(status=_GIVEN.c.status)
    .returning(payables.c.order_id, payables.c.seller_id, payables.c.amount_fen)
)


async def set_payables_of(tx: Tx, statuses: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Set the status of each order's payables (order id → status) in one statement; returns
    them (order id → seller → fen). The orders' payments are locked already (each writer of
    payables locks its order's payment first)."""
    found: dict[str, dict[str, int]] = {order_id: {} for order_id in statuses}
    if statuses:
        given = {"order_ids": list(statuses), "statuses": list(statuses.values())}
        for r in await driver.fetch(tx.conn, _SET_PAYABLES, **given):
            found[r.order_id][r.seller_id] = r.amount_fen
    return found


LAPSED_HOLDS = Counter(
    "caravan_payments_lapsed_holds",
    "Payments declined because the order's hold had lapsed (held_until: the order's deadline,"
    " or the hold's time, passed while payments lagged behind, or before the gateway, away,"
    " had seen a prepaid charge), by payment method: nothing charged or lent, answered"
    " payment.declined (expired)",
    ["method"],
)
owned_by("payments", LAPSED_HOLDS)
start_at_zero(LAPSED_HOLDS, get_args(PaymentMethod))


async def declined_lapsed(
    tx: Tx,
    order_id: str,
    method: str,
    held_until: datetime | None,
    before: str,
    caused_by: str | None = None,
) -> None:
    """The order's payment, made ``declined`` in ``tx`` because its hold had lapsed
    (:func:`hold_lapsed`) ``before`` it was charged or lent for, said so (``payment.declined``,
    ``expired``), as a payment that did not happen is, logged and counted; orders ends the
    order ``expired`` if its deadline has not already, and its cancellation then voids
    nothing."""
    log.info(
        "order %s: its hold lapsed at %s, %s; nothing charged or lent (payment.declined, expired)",
        order_id,
        held_until,
        before,
    )
    await tx.emit(PaymentDeclined(order_id=order_id, reason="expired"), causation_id=caused_by)
    tx.after_commit(LAPSED_HOLDS.labels(method).inc)


async def _refuse_lapsed(tx: Tx, data: StockReserved, base: dict[str, Any]) -> None:
    """The order's hold had lapsed before its ``stock.reserved`` was read: its payment is
    ``declined`` with nothing charged or lent (:func:`declined_lapsed`)."""
    if not await _claim_payment(tx, data.order_id, status="declined", **base):
        log.info("order %s already has a payment; nothing to do", data.order_id)
        return
    before = "before its stock.reserved was read"
    await declined_lapsed(tx, data.order_id, data.payment.method, data.held_until, before)


async def on_stock_reserved(tx: Tx, parsed: Parsed, monthly_rate_bp: int = 0) -> None:
    """Authorise the order's payment: a loan decided here, a prepaid charge left for the
    gateway loop, a platform's order once the platform was paid; nothing for a hold that had
    lapsed (:func:`_refuse_lapsed`)."""
    data = parsed.data
    assert isinstance(data, StockReserved)
    method = data.payment.method
    owed = _payables(data)
    if sum(owed.values()) != data.total_fen:
        log.error(
            "order %s: lines add up to %d, total is %d",
            data.order_id,
            sum(owed.values()),
            data.total_fen,
        )
    base = {"buyer_id": data.buyer_id, "method": method, "amount_fen": data.total_fen}
    platform_order = _platform_order(data)
    if platform_order is not None:
        await _collected_by_platform(tx, data, *platform_order, owed, base)
        return
    if hold_lapsed(data.held_until, datetime.now(UTC)):
        await _refuse_lapsed(tx, data, base)
        return
    if method == "prepaid":
        # The gateway is called after this commits (services.payments.prepaid).
        if await _claim_payment(
            tx,
            data.order_id,
            status="charging",
            next_attempt_at=datetime.now(UTC),
            held_until=data.held_until,  # not sent from then on, unless it may have been
            trace_headers=current_trace_headers(),
            caused_by=parsed.envelope.id,
            **base,
        ):
            _record_payables(tx, data.order_id, owed, "pending")
            tx.signal(GATEWAY_WORK)
        else:
            log.info("order %s already has a payment; nothing to do", data.order_id)
        return
    # With the columns _set_status sets below, so that it is folded into this insert (one
    # version of the row, no update: Tx.update_later).
    pending = {"status": "pending", "updated_at": datetime.now(UTC), "loan_id": None}
    if not await _claim_payment(tx, data.order_id, **pending, **base):
        log.info("order %s already has a payment; nothing to do", data.order_id)
        return
    if data.total_fen == 0:
        # Nothing to lend (goods priced 0, as a seed could load them before shared.seed
        # refused it): authorised without a loan or a credit check.
        _record_payables(tx, data.order_id, owed, "owed")
        _set_status(tx, data.order_id, "authorized")
        await tx.emit(
            PaymentAuthorized(
                order_id=data.order_id, buyer_id=data.buyer_id, method=method, amount_fen=0
            )
        )
        return
    await _load_credit(tx, [data.buyer_id])
    credit: Credit = tx.identity[CREDIT, data.buyer_id]
    if credit.limit_fen is None or not fits(
        data.total_fen, credit.limit_fen, credit.outstanding_fen
    ):
        _set_status(tx, data.order_id, "declined")
        await tx.emit(PaymentDeclined(order_id=data.order_id, reason="credit_declined"))
        return
    loan_id = new_id()
    plan = schedule(data.total_fen, data.payment.term_months or 1, days.today(), monthly_rate_bp)
    term = len(plan)  # fewer months than asked for a loan of fewer fen (credit.schedule)
    interest = sum(i.interest_fen for i in plan)
    credit.outstanding_fen += data.total_fen
    tx.insert_later(
        loans,
        {
            "loan_id": loan_id,
            "order_id": data.order_id,
            "buyer_id": data.buyer_id,
            "principal_fen": data.total_fen,
            "outstanding_fen": data.total_fen,
            "term_months": term,
            "status": "active",
            "interest_fen": interest,
            "monthly_rate_bp": monthly_rate_bp,
        },
    )
    for i in plan:
        tx.insert_later(
            instalments,
            {
                "loan_id": loan_id,
                "number": i.number,
                "due": i.due,
                "amount_fen": i.amount_fen,
                "interest_fen": i.interest_fen,
            },
        )
    _record_payables(tx, data.order_id, owed, "owed")
    ledger_store.post(
        tx,
        disbursement_txn(loan_id),
        "loan_disbursed",
        ledger.loan_disbursed(owed, interest),
        order_id=data.order_id,
        loan_id=loan_id,
    )
    _set_status(tx, data.order_id, "authorized", loan_id=loan_id)
    await tx.emit(
        PaymentAuthorized(
            order_id=data.order_id,
            buyer_id=data.buyer_id,
            method=method,
            amount_fen=data.total_fen,
            loan_id=loan_id,
            term_months=term,
            interest_fen=interest,
            schedule=[
                ScheduledInstalment(
                    number=i.number, due=i.due, amount_fen=i.amount_fen, interest_fen=i.interest_fen
                )
                for i in plan
            ],
        )
    )


async def _collected_by_platform(
    tx: Tx,
    data: StockReserved,
    app: str,
    order_ref: str,
    owed: dict[str, int],
    base: dict[str, Any],
) -> None:
    """A prepaid order the platform ``app`` placed: authorised once the adapter has said the
    platform took the money for it (``platform.order_paid``), the platform holding it for us
    and the sellers owed their parts; ``awaiting`` until then. An order that only
    names a platform's source is never paid for: it expires."""
    await _lock_orders(tx, [(app, order_ref)])
    paid = await tx.conn.scalar(
        select(func.count()).where(
            platform_paid.c.app == app, platform_paid.c.order_ref == order_ref
        )
    )
    status = "authorized" if paid else "awaiting"
    if not await _claim_payment(
        tx, data.order_id, status=status, collected_by=app, order_ref=order_ref, **base
    ):
        log.info("order %s already has a payment; nothing to do", data.order_id)
        return
    _record_payables(tx, data.order_id, owed, "owed" if paid else "pending")
    if paid:
        charged = ledger.platform_collected(app, owed)
        await post_charge(
            tx, data.order_id, data.buyer_id, data.total_fen, "platform_collected", charged
        )
    else:
        log.info("order %s waits for %s to say it was paid for %s", data.order_id, app, order_ref)


async def on_platform_order_paid(tx: Tx, parsed: Parsed) -> None:
    """The platform adapter says a platform took the money for an order it placed: remember
    it, and authorise each payment waiting for this, booked as one reserved after it is
    (:func:`_collected_by_platform`): the order's, and a copy's under another order id, held
    for an operator to void (``caravan payments void-unplaced``)."""
    data = parsed.data
    assert isinstance(data, PlatformOrderPaid)
    platform_order = _platform_order(data)
    if platform_order is None:
        log.warning("platform.order_paid of %r names no platform app; ignored", data.source)
        return
    await _lock_orders(tx, [platform_order])
    app = platform_order[0]
    await tx.conn.execute(
        pg_insert(platform_paid).values(app=app, order_ref=data.order_ref).on_conflict_do_nothing()
    )
    await tx.flush()  # a payment this batch has claimed is written by now
    rows = await tx.conn.execute(
        update(payments)
        .where(
            payments.c.collected_by == app,
            payments.c.order_ref == data.order_ref,
            payments.c.status == "awaiting",
        )
        .values(status="authorized", updated_at=func.now())
        .returning(payments.c.order_id, payments.c.buyer_id, payments.c.amount_fen)
    )
    for row in sorted(rows, key=lambda r: r.order_id):
        owed = await set_payables(tx, row.order_id, "owed")
        charged = ledger.platform_collected(app, owed)
        await post_charge(
            tx, row.order_id, row.buyer_id, row.amount_fen, "platform_collected", charged
        )


async def post_charge(
    tx: Tx,
    order_id: str,
    buyer_id: str,
    amount_fen: int,
    kind: str,
    entries: list[ledger.Entry],
    caused_by: str | None = None,
) -> None:
    """A prepaid order is paid for: post the charge to the ledger (``kind``, ``entries``) and
    say so (``payment.authorized``)."""
    ledger_store.post(tx, charge_txn(order_id), kind, entries, order_id=order_id)
    await tx.emit(
        PaymentAuthorized(
            order_id=order_id, buyer_id=buyer_id, method="prepaid", amount_fen=amount_fen
        ),
        causation_id=caused_by,
    )


async def reverse_charge(
    tx: Tx, order_id: str, amount_fen: int, caused_by: str | None = None
) -> None:
    """A prepaid order's charge is void: reverse it in the ledger if it was posted, cancel
    the sellers' payables, and say so (``payment.voided``)."""
    charged = await ledger_store.entries_of(tx.conn, charge_txn(order_id))
    await set_payables(tx, order_id, "cancelled")
    await charge_reversed(tx, order_id, amount_fen, charged, caused_by)


async def charge_reversed(
    tx: Tx, order_id: str, amount_fen: int, charged: list[ledger.Entry], caused_by: str | None
) -> None:
    """:func:`reverse_charge`'s ledger entries (the ``charged`` ones reversed, if any) and
    event, its payables cancelled already."""
    if charged:
        ledger_store.post(
            tx,
            void_txn(order_id),
            "prepaid_voided",
            ledger.reversal(charged),
            order_id=order_id,
        )
    await tx.emit(
        PaymentVoided(order_id=order_id, amount_fen=amount_fen if charged else 0),
        causation_id=caused_by,
    )


VOIDABLE = select(
    payments.c.status,
    payments.c.loan_id,
    payments.c.method,
    payments.c.amount_fen,
    payments.c.collected_by,
).with_for_update()
"""What :func:`void_payment` reads of a payment, locked."""


async def on_order_cancelled(tx: Tx, parsed: Parsed) -> None:
    """Void the order's loan or charge, exactly once (:func:`void_payment`); remember the
    cancellation if it came first."""
    data = parsed.data
    assert isinstance(data, OrderCancelled)
    row = (await tx.conn.execute(VOIDABLE.where(payments.c.order_id == data.order_id))).first()
    if row is None:
        await _claim_payment(tx, data.order_id, status="cancelled")
        return
    await void_payment(tx, data.order_id, row, parsed.envelope.id)


async def void_payment(
    tx: Tx, order_id: str, row: Any, caused_by: str | None, *, unplaced: bool = False
) -> bool:
    """Void what the order's payment (``row``, as :data:`VOIDABLE` read it, locked) holds, as
    its order's cancellation does; False: it holds nothing to void (declined, voided already,
    ...). A prepaid charge (made or in flight) is handed to the gateway loop as ``voiding``
    (``caused_by``: the cause of the ``payment.voided`` it emits): the gateway is told to
    void the order's key outside this transaction. What a platform collected is reversed
    here (on a cancellation, the platform refunds its buyer). ``unplaced``: an operator's void
    of an order the orders service never had (:func:`void_loan`)."""
    if row.collected_by is not None:
        if row.status not in ("authorized", "awaiting"):
            return False
        _set_status(tx, order_id, "voided")
        await reverse_charge(tx, order_id, row.amount_fen)
        return True
    if row.status == "charging" or (row.status == "authorized" and row.method == "prepaid"):
        _set_status(tx, order_id, "voiding", next_attempt_at=datetime.now(UTC), caused_by=caused_by)
        tx.signal(GATEWAY_WORK)
        return True
    if row.status != "authorized":
        return False
    if row.loan_id is None:  # a microloan order of 0 fen: nothing was lent
        # Set now, not at commit: another copy of the cancellation in this batch (the same
        # subscription: nothing is written between them) would read it authorised still.
        voided = await tx.conn.execute(
            update(payments)
            .where(payments.c.order_id == order_id, payments.c.status == "authorized")
            .values(status="voided", updated_at=datetime.now(UTC))
            .returning(payments.c.order_id)
        )
        if voided.first() is None:
            return False
        await set_payables(tx, order_id, "cancelled")
        await tx.emit(PaymentVoided(order_id=order_id, amount_fen=0))
        return True
    return await void_loan(tx, order_id, row.loan_id, unplaced=unplaced)


async def void_loan(tx: Tx, order_id: str, loan_id: str, *, unplaced: bool = False) -> bool:
    """Void an authorised loan, active or already repaid in full: its credit is restored
    (it no longer counts as outstanding), the sellers' payables are cancelled, the
    disbursement is reversed in the ledger, and whatever the buyer repaid is owed back to
    them (``buyer_refund_payable``, said as ``refund_owed_fen`` on ``payment.voided``, which
    says ``unplaced`` of an order orders never had: notifications then waits for no
    ``order.placed`` of it); False: it was voided already."""
    loan = (
        await tx.conn.execute(
            update(loans)
            .where(loans.c.loan_id == loan_id, loans.c.status.in_(("active", "repaid")))
            .values(status="voided", outstanding_fen=0)
            .returning(loans.c.principal_fen)
        )
    ).first()
    if loan is None:
        log.warning("loan %s of order %s is voided already; not voided again", loan_id, order_id)
        return False
    # No reminder of them any more: out of the reminder sweep's index (reminders.py). A sweep
    # that holds them commits first; one that comes after passes them over. Nor owed: out of
    # the loan book's overdue loans' index too (LEFT_UNPAID).
    await tx.conn.execute(
        update(instalments)
        .where(instalments.c.loan_id == loan_id)
        .values(reminders_done=True, voided=True)
    )
    paid = (
        await tx.conn.execute(
            select(
                func.coalesce(func.sum(repayments.c.principal_fen), 0).label("principal"),
                func.coalesce(func.sum(repayments.c.interest_fen), 0).label("interest"),
            ).where(repayments.c.loan_id == loan_id)
        )
    ).one()
    disbursed = await ledger_store.entries_of(tx.conn, disbursement_txn(loan_id))
    ledger_store.post(
        tx,
        void_txn(order_id),
        "loan_voided",
        ledger.loan_voided(disbursed, int(paid.principal), int(paid.interest)),
        order_id=order_id,
        loan_id=loan_id,
    )
    await set_payables(tx, order_id, "cancelled")
    owed = int(paid.principal) + int(paid.interest)
    # On the payment too, as a void_refused charge's is: GET /orders/{id}/payment and the
    # list of the voided say what its buyer is owed back (NULL: nothing).
    _set_status(tx, order_id, "voided", refund_owed_fen=owed or None)
    await tx.emit(
        PaymentVoided(
            order_id=order_id,
            loan_id=loan_id,
            amount_fen=loan.principal_fen,
            refund_owed_fen=owed,
            unplaced=unplaced or None,
        )
    )
    return True


def _set_status(tx: Tx, order_id: str, status: str, **values: object) -> None:
    """Set the payment's status when the transaction commits (nothing reads it back)."""
    row = {"order_id": order_id, "status": status, "updated_at": datetime.now(UTC), **values}
    tx.update_later(payments, "order_id", row)


async def load_seed(tx: Tx, seed: SeedFile) -> Loaded:
    """Open a credit line for each seeded buyer that has none (loading twice changes nothing),
    written to the audit trail as one opened through the API is. A buyer's line opened before
    is left as it is, and named where the file says another limit: an operator's later
    ``caravan payments credit-set`` (a risky buyer's limit lowered) is not undone by the next
    seed (``caravan up --demo`` seeds every time), as a lot loaded before keeps its counts.
    Told as :class:`Loaded` (buyers: the lines opened)."""
    who = audit.os_actor()  # once: it reads the settings
    limits = {buyer.id: buyer.credit_limit_fen for buyer in seed.buyers}
    found = await tx.conn.execute(
        driver.locked_by_key(
            select(credit_lines.c.buyer_id, credit_lines.c.credit_limit_fen),
            credit_lines.c.buyer_id,
        ),
        {"keys": list(limits)},
    )
    opened_before = {row.buyer_id: row.credit_limit_fen for row in found}
    kept = [
        f"credit line of {buyer} was opened before: left as it is, limit"
        f" {before} fen (the file says {limits[buyer]})"
        for buyer in limits
        if (before := opened_before.get(buyer)) is not None and before != limits[buyer]
    ]
    rows = [
        {"buyer_id": b, "credit_limit_fen": n} for b, n in limits.items() if b not in opened_before
    ]
    # A line opened meanwhile, through the API, is not opened here: that one stands.
    opened_now = await driver.insert_new(tx.conn, credit_lines, "buyer_id", rows)
    for buyer in limits:
        if buyer in opened_now:
            audit.record_later(
                tx,
                who,
                "credit.set",
                buyer,
                before=None,
                after={"credit_limit_fen": limits[buyer]},
                detail={"by": "caravan seed"},
            )
    return Loaded(added={"buyers": opened_now}, kept={"buyers": kept})
