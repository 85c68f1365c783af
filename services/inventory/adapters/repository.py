"""Reading and changing lots and reservations, inside one transaction."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.adapters.tables import (
    lots,
    products,
    reservation_lines,
    reservations,
)
from services.inventory.domain.stock import Lot, Take


@dataclass(frozen=True)
class Product:
    sku: str
    seller_id: str
    unit_price_fen: int


@dataclass(frozen=True)
class HeldLine:
    lot_id: str
    quantity: int
    best_before: date


class StockRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def products(self, skus: Iterable[str]) -> dict[str, Product]:
        rows = await self.conn.execute(
            select(products.c.sku, products.c.seller_id, products.c.unit_price_fen).where(
                products.c.sku.in_(list(skus))
            )
        )
        return {r.sku: Product(r.sku, r.seller_id, r.unit_price_fen) for r in rows}

    async def lock_lots(self, skus: Iterable[str]) -> list[Lot]:
        """The lots of these SKUs, row-locked in a fixed order (no deadlocks between orders)."""
        rows = await self.conn.execute(
            select(lots)
            .where(lots.c.sku.in_(sorted(set(skus))))
            .order_by(lots.c.lot_id)
            .with_for_update()
        )
        return [Lot(r.lot_id, r.sku, r.available, r.available_from, r.best_before) for r in rows]

    async def reservation_status(self, order_id: str, lock: bool = True) -> str | None:
        stmt = select(reservations.c.status).where(reservations.c.order_id == order_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.conn.execute(stmt)).scalar_one_or_none()

    async def create_reservation(self, order_id: str, status: str, takes: list[Take]) -> bool:
        """False if this order already has a reservation (or a rejection) on record."""
        inserted = (
            await self.conn.execute(
                pg_insert(reservations)
                .values(order_id=order_id, status=status)
                .on_conflict_do_nothing()
                .returning(reservations.c.order_id)
            )
        ).first()
        if inserted is None:
            return False
        for take in takes:
            await self.conn.execute(
                update(lots)
                .where(lots.c.lot_id == take.lot_id)
                .values(
                    available=lots.c.available - take.quantity,
                    reserved=lots.c.reserved + take.quantity,
                )
            )
        if takes:
            await self.conn.execute(
                reservation_lines.insert(),
                [{"order_id": order_id, "lot_id": t.lot_id, "quantity": t.quantity} for t in takes],
            )
        return True

    async def held_lines(self, order_id: str) -> list[HeldLine]:
        """The lots an order holds stock in, locked in lot order."""
        rows = await self.conn.execute(
            select(reservation_lines.c.lot_id, reservation_lines.c.quantity, lots.c.best_before)
            .join(lots, lots.c.lot_id == reservation_lines.c.lot_id)
            .where(reservation_lines.c.order_id == order_id)
            .order_by(reservation_lines.c.lot_id)
            .with_for_update(of=lots)
        )
        return [HeldLine(r.lot_id, r.quantity, r.best_before) for r in rows]

    async def move(self, lot_id: str, **deltas: int) -> None:
        """Add ``deltas`` (e.g. ``reserved=-2, sold=2``) to a lot's counters."""
        values = {name: lots.c[name] + delta for name, delta in deltas.items() if delta}
        if values:
            await self.conn.execute(update(lots).where(lots.c.lot_id == lot_id).values(**values))

    async def set_status(self, order_id: str, status: str) -> None:
        await self.conn.execute(
            update(reservations)
            .where(reservations.c.order_id == order_id)
            .values(status=status, updated_at=func.now())
        )
