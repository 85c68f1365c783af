"""Read models of the stock: per lot (with its history and the orders holding it), per SKU,
and the spoilage report (served by the admin API).

``day`` decides which lots are in season; stock still available in a lot past its
``best_before`` can never be sold and is reported as ``expired_unsold``.
"""

from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Select,
    case,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.adapters.tables import (
    lot_adjustments,
    lot_corrections,
    lot_selling,
    lots,
    products,
    reservation_lines,
    reservations,
    sellers,
)
from shared.events.envelope import Frozen
from shared.logs import masked
from shared.pagination import Position, after


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
    on_sale: bool


class SkuStock(Frozen):
    """A SKU's counters summed over all its lots; ``sellable`` is what is available in
    season, in lots on sale (not stopped selling). ``lots`` leaves out the finished ones
    (empty and past ``best_before``) unless asked for them all."""

    sku: str
    seller_id: str
    seller_name: str  # the seed's name of the seller, for staff who know sellers by name
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
    """Lots with spoiled stock: ``spoiled`` (returned after expiry) + ``expired_unsold``,
    the totals over every such lot, ``lots`` a page of them (``next_cursor``: the rest)."""

    day: date
    spoiled: int
    expired_unsold: int
    lots: list[SpoiledLot]
    next_cursor: str | None = None


class LotEntry(Frozen):
    """One change of a lot after it was received: an adjustment of its count (``delta``
    units found or written off; ``spoiled``: written off as spoiled), a correction of its
    terms (``before`` and ``after``: the fields it changed), or its selling stopped or
    restarted (``on_sale``: false, true). ``actor`` is who made it (null
    on adjustments made before 2026-12-04, whose author is in the audit trail)."""

    kind: Literal["adjustment", "correction", "selling"]
    id: str
    at: datetime
    actor: str | None
    reason: str
    delta: int | None = None
    spoiled: bool | None = None
    before: dict[str, str] | None = None
    after: dict[str, str] | None = None
    on_sale: bool | None = None


class LotHistory(Frozen):
    """A lot's counters, and a page of its adjustments, corrections and selling stopped or
    restarted, oldest first
    (``next_cursor``: the rest)."""

    lot: LotStock
    entries: list[LotEntry]
    next_cursor: str | None = None


class LotHold(Frozen):
    """An order holding ``quantity`` units of a lot now, since ``held_at``, until
    ``held_until``: what its ``stock.reserved`` said, its deadline or the hold's time, whichever
    is sooner (null for a hold made before inventory migration 0010). A hold lasts until its
    order is paid (the units sold) or cancelled (back to the lot)."""

    order_id: str
    quantity: int
    held_at: datetime
    held_until: datetime | None


class HeldTotals(Frozen):
    """How many orders hold a lot now and how many units in all: the lot's ``reserved``."""

    orders: int
    held: int


class LotHolds(Frozen):
    """A lot's counters, a page of the orders holding it, the oldest hold first
    (``next_cursor``: the rest), and the totals of every page."""

    lot: LotStock
    items: list[LotHold]
    next_cursor: str | None = None
    totals: HeldTotals


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
        on_sale=row.on_sale,
    )


def _finished(day: date) -> ColumnElement[bool]:
    """Lots that hold nothing any more and never will: empty and past ``best_before``."""
    return (lots.c.best_before < day) & (lots.c.available == 0) & (lots.c.reserved == 0)


def _sums(day: date) -> list[Any]:
    """A SKU's counters over every lot it ever had (``sellable``: available in season, on
    sale)."""

    def total(column: Any, where: ColumnElement[bool] | None = None) -> Any:
        summed = func.sum(column) if where is None else func.sum(column).filter(where)
        return func.coalesce(summed, 0)

    in_season = (lots.c.available_from <= day) & (lots.c.best_before >= day) & lots.c.on_sale
    return [
        *(total(lots.c[c]).label(c) for c in ("received", "available", "reserved", "sold")),
        total(lots.c.spoiled).label("spoiled"),
        total(lots.c.available, in_season).label("sellable"),
        total(lots.c.available, lots.c.best_before < day).label("expired_unsold"),
    ]


async def seller_known(conn: AsyncConnection, seller: str) -> bool:
    found = select(sellers.c.seller_id).where(sellers.c.seller_id == seller)
    return (await conn.execute(found)).first() is not None


class Seller(Frozen):
    """A seller as the seed names it, its phone masked as log lines show it, and how many
    products (SKUs) it sells."""

    seller_id: str
    name: str
    county: str
    phone: str
    skus: int


async def seller_list(
    conn: AsyncConnection, q: str | None, start: Position | None, limit: int
) -> list[Seller]:
    """Sellers in id order from after ``start``, ``limit`` of them: those whose id or name
    holds ``q`` (any case) if given; each one's SKUs counted through
    ``ix_inventory_products_seller_sku``."""
    skus = (
        select(func.count())
        .where(products.c.seller_id == sellers.c.seller_id)
        .scalar_subquery()
        .label("skus")
    )
    query = select(sellers, skus).order_by(sellers.c.seller_id).limit(limit)
    if q is not None:
        query = query.where(
            sellers.c.seller_id.icontains(q, autoescape=True)
            | sellers.c.name.icontains(q, autoescape=True)
        )
    if start is not None:
        query = query.where(after([sellers.c.seller_id], start))
    rows = (await conn.execute(query)).all()
    return [Seller(**{**row._asdict(), "phone": masked(row.phone)}) for row in rows]


async def lot_stock(conn: AsyncConnection, lot_id: str, day: date) -> LotStock | None:
    row = (await conn.execute(select(lots).where(lots.c.lot_id == lot_id))).first()
    return None if row is None else _lot(row, day)


_NOT_OF_EVERY_KIND = {
    "delta": null(),
    "spoiled": null().cast(Boolean),
    "before": null().cast(JSONB),
    "after": null().cast(JSONB),
    "on_sale": null().cast(Boolean),
}


def _entries(kind: str, id_: Column[str], *own: str) -> Select[Any]:
    """A lot's history entries (:class:`LotEntry`) of one ``kind``, from ``id_``'s table:
    the columns every kind has, its ``own`` and null for the other kinds'."""
    table = id_.table
    return select(
        literal(kind).label("kind"),
        id_.label("id"),
        table.c.lot_id,
        table.c.created_at.label("at"),
        table.c.actor,
        table.c.reason,
        *(
            table.c[name] if name in own else absent.label(name)
            for name, absent in _NOT_OF_EVERY_KIND.items()
        ),
    )


_ENTRIES = union_all(
    _entries("adjustment", lot_adjustments.c.adjustment_id, "delta", "spoiled"),
    _entries("correction", lot_corrections.c.correction_id, "before", "after"),
    _entries("selling", lot_selling.c.change_id, "on_sale"),
).subquery("entries")


async def lot_entries(
    conn: AsyncConnection, lot_id: str, *, start: Position | None = None, limit: int
) -> list[LotEntry]:
    """Up to ``limit`` of a lot's history (adjustments, corrections, selling stopped or
    restarted) after ``start``, oldest first
    (by time, kind and id)."""
    key = (_ENTRIES.c.at, _ENTRIES.c.kind, _ENTRIES.c.id)
    query = select(_ENTRIES).where(_ENTRIES.c.lot_id == lot_id)
    if start is not None:
        query = query.where(after(key, start))
    rows = await conn.execute(query.order_by(*key).limit(limit))
    return [LotEntry.model_validate(r._mapping) for r in rows]


def _held(lot_id: str, *columns: Any) -> Select[Any]:
    """``columns`` of the reservation lines of ``lot_id`` whose order holds them now (through
    their index on ``lot_id``: every order's lines stay in the table), with their holds."""
    return (
        select(*columns)
        .select_from(
            reservation_lines.join(
                reservations, reservations.c.order_id == reservation_lines.c.order_id
            )
        )
        .where(reservation_lines.c.lot_id == lot_id, reservations.c.status == "reserved")
    )


HOLD_KEY = (reservations.c.created_at, reservations.c.order_id)


def holding(lot_id: str, start: Position | None, limit: int) -> Select[Any]:
    """The orders holding units of ``lot_id`` now, up to ``limit`` after ``start``, the
    oldest hold first (by its time and order id)."""
    query = _held(
        lot_id,
        reservation_lines.c.order_id,
        reservation_lines.c.quantity,
        reservations.c.created_at.label("held_at"),
        reservations.c.held_until,
    )
    if start is not None:
        query = query.where(after(HOLD_KEY, start))
    return query.order_by(*HOLD_KEY).limit(limit)


def held_totals(lot_id: str) -> Select[Any]:
    """How many orders hold units of ``lot_id`` now, and how many units in all."""
    return _held(
        lot_id,
        func.count().label("orders"),
        func.coalesce(func.sum(reservation_lines.c.quantity), 0).label("held"),
    )


async def lot_holds(
    conn: AsyncConnection, lot_id: str, *, start: Position | None = None, limit: int
) -> tuple[list[LotHold], HeldTotals]:
    """Up to ``limit`` of the orders holding ``lot_id`` after ``start`` (:func:`holding`),
    and the totals of them all."""
    rows = await conn.execute(holding(lot_id, start, limit))
    totals = (await conn.execute(held_totals(lot_id))).one()
    return (
        [LotHold.model_validate(r._mapping) for r in rows],
        HeldTotals.model_validate(totals._mapping),
    )


def stock_totals(
    day: date,
    sku: str | None = None,
    *,
    start: Position | None = None,
    limit: int | None = None,
    seller: str | None = None,
) -> Select[Any]:
    """The statement of :func:`stock`'s counters, by SKU: a seller's products read through
    ``ix_inventory_products_seller_sku`` (inventory migration 0011), in SKU order."""
    of_seller = sellers.c.seller_id == products.c.seller_id
    query = (
        select(
            products.c.sku, sellers.c.seller_id, sellers.c.name.label("seller_name"), *_sums(day)
        )
        .select_from(
            products.join(sellers, of_seller).outerjoin(lots, lots.c.sku == products.c.sku)
        )
        .group_by(products.c.sku, sellers.c.seller_id)
        .order_by(products.c.sku)
        .limit(limit)
    )
    if sku is not None:
        query = query.where(products.c.sku == sku)
    if seller is not None:
        query = query.where(products.c.seller_id == seller)
    if start is not None:
        query = query.where(after([products.c.sku], start))
    return query


async def stock(
    conn: AsyncConnection,
    day: date,
    sku: str | None = None,
    *,
    start: Position | None = None,
    limit: int | None = None,
    finished: bool = False,
    seller: str | None = None,
) -> list[SkuStock]:
    """One product's stock, or up to ``limit`` products' by SKU after ``start`` (of one
    ``seller``'s products, or every one): counters summed over every lot, and the lots in
    serving order, leaving out the finished ones (empty and past ``best_before``: lots are
    never deleted) unless ``finished``."""
    query = stock_totals(day, sku, start=start, limit=limit, seller=seller)
    totals = (await conn.execute(query)).all()
    lot_query = select(lots).where(lots.c.sku.in_([t.sku for t in totals]))
    if not finished:
        lot_query = lot_query.where(~_finished(day))
    by_sku: dict[str, list[LotStock]] = {t.sku: [] for t in totals}
    for row in await conn.execute(
        lot_query.order_by(lots.c.sku, lots.c.best_before, lots.c.lot_id)
    ):
        by_sku[row.sku].append(_lot(row, day))
    return [SkuStock.model_validate({**t._mapping, "lots": by_sku[t.sku]}) for t in totals]


async def spoiled_report(
    conn: AsyncConnection,
    day: date,
    sku: str | None = None,
    *,
    start: Position | None = None,
    limit: int | None = None,
) -> SpoiledReport:
    """Lots with spoiled stock by SKU and lot id, up to ``limit`` after ``start``; the
    report's totals are over every such lot."""
    expired = lots.c.best_before < day
    unsold = case((expired, lots.c.available), else_=0)
    where = (lots.c.spoiled > 0) | (expired & (lots.c.available > 0))
    if sku is not None:
        where = where & (lots.c.sku == sku)
    key = (lots.c.sku, lots.c.lot_id)
    query = select(*key, lots.c.best_before, lots.c.spoiled, unsold.label("expired_unsold"))
    query = query.where(where if start is None else where & after(key, start))
    rows = (await conn.execute(query.order_by(*key).limit(limit))).all()
    sums = select(
        func.coalesce(func.sum(lots.c.spoiled), 0), func.coalesce(func.sum(unsold), 0)
    ).where(where)
    spoiled, expired_unsold = (await conn.execute(sums)).one()
    return SpoiledReport(
        day=day,
        spoiled=spoiled,
        expired_unsold=expired_unsold,
        lots=[SpoiledLot.model_validate(r._mapping) for r in rows],
    )
