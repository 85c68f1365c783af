"""Use cases of the payments service: authorise on ``stock.reserved``, void on
``order.cancelled``. Each order has at most one payment row, so at most one authorisation."""

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.payments.adapters.tables import credit_lines, instalments, loans, payments
from services.payments.domain.credit import fits, schedule
from shared.events.inventory import StockReserved
from shared.events.orders import OrderCancelled
from shared.events.payments import PaymentAuthorized, PaymentDeclined, PaymentVoided
from shared.events.registry import Parsed
from shared.messaging.uow import Tx
from shared.seed import SeedFile

log = logging.getLogger(__name__)


async def _claim_payment(tx: Tx, order_id: str, **values: object) -> bool:
    """Create the order's payment row; False if the order already has one."""
    row = (
        await tx.conn.execute(
            pg_insert(payments)
            .values(order_id=order_id, **values)
            .on_conflict_do_nothing()
            .returning(payments.c.order_id)
        )
    ).first()
    return row is not None


async def on_stock_reserved(tx: Tx, parsed: Parsed) -> None:
    data = parsed.data
    assert isinstance(data, StockReserved)
    method = data.payment.method
    base = {"buyer_id": data.buyer_id, "method": method, "amount_fen": data.total_fen}
    if not await _claim_payment(tx, data.order_id, status="pending", **base):
        log.info("order %s already has a payment; nothing to do", data.order_id)
        return
    if method == "prepaid":
        await _set_status(tx, data.order_id, "authorized")
        await tx.emit(
            PaymentAuthorized(
                order_id=data.order_id,
                buyer_id=data.buyer_id,
                method=method,
                amount_fen=data.total_fen,
            )
        )
        return
    term = data.payment.term_months or 1
    limit = (
        await tx.conn.execute(
            select(credit_lines.c.credit_limit_fen)
            .where(credit_lines.c.buyer_id == data.buyer_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    outstanding = await tx.conn.scalar(
        select(func.coalesce(func.sum(loans.c.outstanding_fen), 0)).where(
            loans.c.buyer_id == data.buyer_id, loans.c.status == "active"
        )
    )
    if limit is None or not fits(data.total_fen, limit, int(outstanding or 0)):
        await _set_status(tx, data.order_id, "declined")
        await tx.emit(PaymentDeclined(order_id=data.order_id, reason="credit_declined"))
        return
    loan_id = str(uuid.uuid4())
    await tx.conn.execute(
        loans.insert().values(
            loan_id=loan_id,
            order_id=data.order_id,
            buyer_id=data.buyer_id,
            principal_fen=data.total_fen,
            outstanding_fen=data.total_fen,
            term_months=term,
            status="active",
        )
    )
    plan = schedule(data.total_fen, term, datetime.now(UTC).date())
    await tx.conn.execute(
        instalments.insert(),
        [
            {"loan_id": loan_id, "number": i.number, "due": i.due, "amount_fen": i.amount_fen}
            for i in plan
        ],
    )
    await _set_status(tx, data.order_id, "authorized", loan_id=loan_id)
    await tx.emit(
        PaymentAuthorized(
            order_id=data.order_id,
            buyer_id=data.buyer_id,
            method=method,
            amount_fen=data.total_fen,
            loan_id=loan_id,
            term_months=term,
        )
    )


async def on_order_cancelled(tx: Tx, parsed: Parsed) -> None:
    """Void the order's loan or charge, exactly once; remember the cancellation if it came first."""
    data = parsed.data
    assert isinstance(data, OrderCancelled)
    row = (
        await tx.conn.execute(
            select(payments.c.status, payments.c.loan_id, payments.c.amount_fen)
            .where(payments.c.order_id == data.order_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        await _claim_payment(tx, data.order_id, status="cancelled")
        return
    if row.status != "authorized":
        return
    if row.loan_id is not None:
        await tx.conn.execute(
            update(loans)
            .where(loans.c.loan_id == row.loan_id, loans.c.status == "active")
            .values(status="voided", outstanding_fen=0)
        )
    await _set_status(tx, data.order_id, "voided")
    await tx.emit(
        PaymentVoided(order_id=data.order_id, loan_id=row.loan_id, amount_fen=row.amount_fen or 0)
    )


async def _set_status(tx: Tx, order_id: str, status: str, **values: object) -> None:
    await tx.conn.execute(
        update(payments)
        .where(payments.c.order_id == order_id)
        .values(status=status, updated_at=func.now(), **values)
    )


async def load_seed(tx: Tx, seed: SeedFile) -> None:
    """Set each seeded buyer's credit limit (loading twice changes nothing)."""
    for buyer in seed.buyers:
        await tx.conn.execute(
            pg_insert(credit_lines)
            .values(buyer_id=buyer.id, credit_limit_fen=buyer.credit_limit_fen)
            .on_conflict_do_update(
                index_elements=["buyer_id"],
                set_={"credit_limit_fen": buyer.credit_limit_fen},
                where=credit_lines.c.credit_limit_fen != buyer.credit_limit_fen,
            )
        )
