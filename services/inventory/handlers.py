"""Use cases of the inventory service: reserve on ``order.placed``, release on
``order.cancelled``, sell on ``order.confirmed``. Each runs inside one transaction."""

import logging
from datetime import UTC, date, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.inventory.adapters.repository import StockRepository
from services.inventory.adapters.tables import lots, products, sellers
from services.inventory.domain.stock import Rejected, allocate, release_split
from shared.events.inventory import (
    LotTake,
    ReservedLine,
    StockRejected,
    StockReleased,
    StockReserved,
    StockSold,
)
from shared.events.orders import OrderCancelled, OrderConfirmed, OrderPlaced, PaymentRequest
from shared.events.registry import Parsed
from shared.messaging.uow import Tx
from shared.seed import SeedFile

log = logging.getLogger(__name__)


def _today() -> date:
    return datetime.now(UTC).date()


async def on_order_placed(tx: Tx, parsed: Parsed) -> None:
    order = parsed.data
    assert isinstance(order, OrderPlaced)
    repo = StockRepository(tx.conn)
    if await repo.reservation_status(order.order_id, lock=False) is not None:
        return
    merged: dict[str, int] = {}
    for line in order.lines:
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    lines = list(merged.items())
    catalogue = await repo.products(sku for sku, _ in lines)
    candidates = await repo.lock_lots(catalogue)
    day = (order.placed_at or parsed.envelope.time).astimezone(UTC).date()
    decision = allocate(lines, set(catalogue), candidates, day)
    if isinstance(decision, Rejected):
        if await repo.create_reservation(order.order_id, "rejected", []):
            await tx.emit(
                StockRejected(order_id=order.order_id, reason=decision.reason, skus=decision.skus)
            )
        return
    if not await repo.create_reservation(order.order_id, "reserved", decision.takes):
        return
    reserved = [
        ReservedLine(
            sku=sku,
            quantity=quantity,
            unit_price_fen=catalogue[sku].unit_price_fen,
            seller_id=catalogue[sku].seller_id,
            lots=[
                LotTake(lot_id=t.lot_id, quantity=t.quantity)
                for t in decision.takes
                if t.sku == sku
            ],
        )
        for sku, quantity in lines
    ]
    await tx.emit(
        StockReserved(
            order_id=order.order_id,
            buyer_id=order.buyer_id,
            payment=order.payment or PaymentRequest(method="prepaid"),
            lines=reserved,
            total_fen=sum(line.unit_price_fen * line.quantity for line in reserved),
        )
    )


async def on_order_cancelled(tx: Tx, parsed: Parsed) -> None:
    """Return exactly what the order held to the same lots (spoiled if the lot has expired)."""
    data = parsed.data
    assert isinstance(data, OrderCancelled)
    repo = StockRepository(tx.conn)
    status = await repo.reservation_status(data.order_id)
    if status is None:
        await repo.create_reservation(data.order_id, "released", [])
        return
    if status != "reserved":
        return
    returned = spoiled = 0
    today = _today()
    for held in await repo.held_lines(data.order_id):
        back, lost = release_split(held.quantity, held.best_before, today)
        await repo.move(held.lot_id, reserved=-held.quantity, available=back, spoiled=lost)
        returned += back
        spoiled += lost
    await repo.set_status(data.order_id, "released")
    await tx.emit(StockReleased(order_id=data.order_id, returned=returned, spoiled=spoiled))


async def on_order_confirmed(tx: Tx, parsed: Parsed) -> None:
    """The held stock becomes sold."""
    data = parsed.data
    assert isinstance(data, OrderConfirmed)
    repo = StockRepository(tx.conn)
    if await repo.reservation_status(data.order_id) != "reserved":
        log.warning("order %s confirmed without a held reservation", data.order_id)
        return
    for held in await repo.held_lines(data.order_id):
        await repo.move(held.lot_id, reserved=-held.quantity, sold=held.quantity)
    await repo.set_status(data.order_id, "sold")
    await tx.emit(StockSold(order_id=data.order_id))


async def load_seed(tx: Tx, seed: SeedFile) -> None:
    """Upsert sellers and products; add lots that are new. Loading twice changes nothing."""
    for seller in seed.sellers:
        values = {"name": seller.name, "county": seller.county, "phone": seller.phone}
        await tx.conn.execute(
            pg_insert(sellers)
            .values(seller_id=seller.id, **values)
            .on_conflict_do_update(index_elements=["seller_id"], set_=values)
        )
    for product in seed.products:
        pvalues = {
            "seller_id": product.seller_id,
            "unit_price_fen": product.unit_price_fen,
            "name": product.name,
        }
        await tx.conn.execute(
            pg_insert(products)
            .values(sku=product.sku, **pvalues)
            .on_conflict_do_update(index_elements=["sku"], set_=pvalues)
        )
    for lot in seed.lots:
        await tx.conn.execute(
            pg_insert(lots)
            .values(
                lot_id=lot.lot_id,
                sku=lot.sku,
                received=lot.quantity,
                available=lot.quantity,
                available_from=lot.available_from,
                best_before=lot.best_before,
            )
            .on_conflict_do_nothing()
        )
