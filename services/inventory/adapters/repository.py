"""Reading and changing lots and reservations, inside one transaction."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.adapters.tables import (
    lot_adjustments,
    lots,
    products,
    reservation_lines,
    reservations,
)
from services.inventory.domain.ledger import Counters, Held, HoldStatus, Move
from services.inventory.domain.stock import Lot, Take
from shared.seed import LotSeed


@dataclass(frozen=True)
class Product:
    sku: str
    seller_id: str
    unit_price_fen: int


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

    async def reservation_status(self, order_id: str, lock: bool = True) -> HoldStatus | None:
        stmt = select(reservations.c.status).where(reservations.c.order_id == order_id)
        if lock:
            stmt = stmt.with_for_update()
        return cast(HoldStatus | None, (await self.conn.execute(stmt)).scalar_one_or_none())

    async def create_reservation(
        self, order_id: str, status: HoldStatus, takes: list[Take]
    ) -> bool:
        """Record the order's hold and the lots it took from (the lots' counters are moved
        separately); False if this order already has a reservation (or a rejection)."""
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
        if takes:
            await self.conn.execute(
                reservation_lines.insert(),
                [{"order_id": order_id, "lot_id": t.lot_id, "quantity": t.quantity} for t in takes],
            )
        return True

    async def held_lines(self, order_id: str) -> list[Held]:
        """The lots an order holds stock in, locked in lot order."""
        rows = await self.conn.execute(
            select(reservation_lines.c.lot_id, reservation_lines.c.quantity, lots.c.best_before)
            .join(lots, lots.c.lot_id == reservation_lines.c.lot_id)
            .where(reservation_lines.c.order_id == order_id)
            .order_by(reservation_lines.c.lot_id)
            .with_for_update(of=lots)
        )
        return [Held(r.lot_id, r.quantity, r.best_before) for r in rows]

    async def apply(self, moves: Iterable[Move]) -> None:
        """Add each move's deltas to its lot's counters, in lot order (the lots are locked)."""
        for move in sorted(moves, key=lambda m: m.lot_id):
            values = {name: lots.c[name] + delta for name, delta in move.deltas().items()}
            if values:
                await self.conn.execute(
                    update(lots).where(lots.c.lot_id == move.lot_id).values(**values)
                )

    async def set_status(self, order_id: str, status: HoldStatus) -> None:
        await self.conn.execute(
            update(reservations)
            .where(reservations.c.order_id == order_id)
            .values(status=status, updated_at=func.now())
        )

    async def overdue_holds(self, hold: timedelta, limit: int) -> list[str]:
        """Orders still holding stock after ``hold`` (by the database's clock) and not yet
        reported, oldest first, row-locked; rows another instance has locked are skipped."""
        rows = await self.conn.execute(
            select(reservations.c.order_id)
            .where(
                reservations.c.status == "reserved",
                reservations.c.expiry_notified_at.is_(None),
                reservations.c.created_at <= func.now() - hold,
            )
            .order_by(reservations.c.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows.scalars())

    async def mark_expiry_notified(self, order_ids: list[str]) -> None:
        await self.conn.execute(
            update(reservations)
            .where(reservations.c.order_id.in_(order_ids))
            .values(expiry_notified_at=func.now())
        )

    async def lock_lot(self, lot_id: str) -> Counters | None:
        row = (
            await self.conn.execute(select(lots).where(lots.c.lot_id == lot_id).with_for_update())
        ).first()
        if row is None:
            return None
        return Counters(row.received, row.available, row.reserved, row.sold, row.spoiled)

    async def add_lot(self, lot: LotSeed) -> bool:
        """Receive a new lot; False if ``lot_id`` exists already (it is left as it is)."""
        inserted = (
            await self.conn.execute(
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
                .returning(lots.c.lot_id)
            )
        ).first()
        return inserted is not None

    async def lot_terms(self, lot_id: str) -> LotSeed | None:
        """A lot as it was first received (before any adjustment)."""
        adjusted = (
            select(func.coalesce(func.sum(lot_adjustments.c.delta), 0))
            .where(lot_adjustments.c.lot_id == lots.c.lot_id)
            .scalar_subquery()
        )
        row = (
            await self.conn.execute(
                select(lots, (lots.c.received - adjusted).label("first_received")).where(
                    lots.c.lot_id == lot_id
                )
            )
        ).first()
        if row is None:
            return None
        return LotSeed(
            lot_id=row.lot_id,
            sku=row.sku,
            quantity=row.first_received,
            available_from=row.available_from,
            best_before=row.best_before,
        )

    async def record_adjustment(
        self, adjustment_id: str, lot_id: str, delta: int, reason: str
    ) -> bool:
        """False if ``adjustment_id`` was recorded before (a retried request)."""
        inserted = (
            await self.conn.execute(
                pg_insert(lot_adjustments)
                .values(adjustment_id=adjustment_id, lot_id=lot_id, delta=delta, reason=reason)
                .on_conflict_do_nothing()
                .returning(lot_adjustments.c.adjustment_id)
            )
        ).first()
        return inserted is not None

    async def adjustment(self, adjustment_id: str) -> tuple[str, int, str] | None:
        """(lot_id, delta, reason) of a recorded adjustment."""
        row = (
            await self.conn.execute(
                select(
                    lot_adjustments.c.lot_id, lot_adjustments.c.delta, lot_adjustments.c.reason
                ).where(lot_adjustments.c.adjustment_id == adjustment_id)
            )
        ).first()
        return None if row is None else (row.lot_id, row.delta, row.reason)
