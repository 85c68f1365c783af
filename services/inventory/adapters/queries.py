"""Read models of the stock: per lot, per SKU, and the spoilage report (served by the admin API).

``day`` decides which lots are in season; stock still available in a lot past its
``best_before`` can never be sold and is reported as ``expired_unsold``.
"""

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.adapters.tables import lots, products
from shared.events.envelope import Frozen


class LotStock(Frozen):
    lot_id: str
    sku: str
    received: int
    available: int
    reserved: int
    sold: int
    spoiled: int
    available_from: date
    best_before: date
    in_season: bool
    expired: bool


class SkuStock(Frozen):
    """A SKU's counters summed over its lots; ``sellable`` is what is available in season."""

    sku: str
    received: int
    available: int
    reserved: int
    sold: int
    spoiled: int
    sellable: int
    expired_unsold: int
    lots: list[LotStock]


class SpoiledLot(Frozen):
    lot_id: str
    sku: str
    best_before: date
    spoiled: int
    expired_unsold: int


class SpoiledReport(Frozen):
    """Lots with spoiled stock: ``spoiled`` (returned after expiry) + ``expired_unsold``."""

    day: date
    spoiled: int
    expired_unsold: int
    lots: list[SpoiledLot]


def _lot(row: Any, day: date) -> LotStock:
    return LotStock(
        lot_id=row.lot_id,
        sku=row.sku,
        received=row.received,
        available=row.available,
        reserved=row.reserved,
        sold=row.sold,
        spoiled=row.spoiled,
        available_from=row.available_from,
        best_before=row.best_before,
        in_season=row.available_from <= day <= row.best_before,
        expired=day > row.best_before,
    )


def _sku(sku: str, lot_rows: Sequence[LotStock]) -> SkuStock:
    return SkuStock(
        sku=sku,
        received=sum(x.received for x in lot_rows),
        available=sum(x.available for x in lot_rows),
        reserved=sum(x.reserved for x in lot_rows),
        sold=sum(x.sold for x in lot_rows),
        spoiled=sum(x.spoiled for x in lot_rows),
        sellable=sum(x.available for x in lot_rows if x.in_season),
        expired_unsold=sum(x.available for x in lot_rows if x.expired),
        lots=list(lot_rows),
    )


async def lot_stock(conn: AsyncConnection, lot_id: str, day: date) -> LotStock | None:
    row = (await conn.execute(select(lots).where(lots.c.lot_id == lot_id))).first()
    return None if row is None else _lot(row, day)


async def stock(conn: AsyncConnection, day: date, sku: str | None = None) -> list[SkuStock]:
    """Every product's stock (or one product's), lots in serving order."""
    query = select(products.c.sku).order_by(products.c.sku)
    lot_query = select(lots).order_by(lots.c.sku, lots.c.best_before, lots.c.lot_id)
    if sku is not None:
        query = query.where(products.c.sku == sku)
        lot_query = lot_query.where(lots.c.sku == sku)
    skus = list((await conn.execute(query)).scalars())
    by_sku: dict[str, list[LotStock]] = {s: [] for s in skus}
    for row in await conn.execute(lot_query):
        if row.sku in by_sku:
            by_sku[row.sku].append(_lot(row, day))
    return [_sku(s, by_sku[s]) for s in skus]


async def spoiled_report(conn: AsyncConnection, day: date, sku: str | None = None) -> SpoiledReport:
    found = [
        SpoiledLot(
            lot_id=x.lot_id,
            sku=x.sku,
            best_before=x.best_before,
            spoiled=x.spoiled,
            expired_unsold=x.available if x.expired else 0,
        )
        for s in await stock(conn, day, sku)
        for x in s.lots
        if x.spoiled or (x.expired and x.available)
    ]
    return SpoiledReport(
        day=day,
        spoiled=sum(x.spoiled for x in found),
        expired_unsold=sum(x.expired_unsold for x in found),
        lots=found,
    )
