"""What each seller is owed for its orders, read for an accountant settling with the sellers
(``GET /payables``, ``caravan payments payables``). Reads only.

A seller's payable of an order (``payments.payables``: seller, order, fen) is ``owed`` from
the moment the order's payment is authorised, when the ledger credits the seller's account
(``seller_payable:<seller>``: the loan disbursed, the prepaid charge or the platform's
collection posted), which the order's confirmation follows; ``cancelled`` once that is
voided (a refund after the sale, ``caravan payments void-sold``; the order cancelled after
its payment was taken), when the ledger debits it back. The times are those entries': a
payable is in a period by when it became owed, and says when it was cancelled. One never
owed (a charge not made, a payment declined) was nothing to the seller and is not listed,
nor is an order of 0 fen, which books nothing.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal_column, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payments.adapters.tables import ledger_entries, payables
from services.payments.domain import ledger
from shared.pagination import Position, newest_first, page

_owed = ledger_entries.alias("owed")
_back = ledger_entries.alias("back")
_SELLERS = ledger.seller_payable("")


def _credited(entries: Any) -> ColumnElement[bool]:
    """A seller's account credited: the predicate of the indexes of the sellers' credits
    (payments migration 0026), its constants written in the statement so that the planner
    proves them of a prepared one too."""
    return and_(
        entries.c.amount_fen < literal_column("0"),
        func.starts_with(entries.c.account, literal_column(f"'{_SELLERS}'")),
    )


def _booked(credit: Any) -> ColumnElement[bool]:
    """The payable of the seller credited by the ledger entry ``credit``, for its order."""
    seller = func.substr(credit.c.account, len(_SELLERS) + 1)
    return and_(payables.c.order_id == credit.c.order_id, payables.c.seller_id == seller)


_PAYABLE = (
    select(payables.c.seller_id, payables.c.amount_fen, payables.c.status)
    .where(_booked(_owed))
    .limit(1)  # its key's one row, read by that key for each credit: never every payable
    .lateral("payable")
)
ROWS = (
    select(
        _PAYABLE.c.seller_id,
        _owed.c.order_id,
        _PAYABLE.c.amount_fen,
        _PAYABLE.c.status,
        _owed.c.created_at.label("owed_at"),
    )
    .select_from(_owed.join(_PAYABLE, true()))
    .where(_credited(_owed))
)
"""Each payable that became owed, with when (``owed_at``), read from the ledger's credit of
its seller: a period's from that period's credits (the index ``ledger_seller_credits``), a
seller's from its account's (``ledger_credits_of_seller``), each payable then by its key."""
CANCELLED_AT = (
    select(func.min(_back.c.created_at))
    .where(
        _back.c.order_id == _owed.c.order_id,
        _back.c.account == _owed.c.account,
        _back.c.amount_fen > 0,
    )
    .scalar_subquery()
    .label("cancelled_at")
)
"""When a payable was cancelled, the ledger debiting its seller back (None: still owed)."""
KEY = (_owed.c.created_at, _owed.c.order_id)  # one seller's, read newest first


def _of_seller(query: Select[Any], seller_id: str | None) -> Select[Any]:
    if seller_id is None:
        return query
    return query.where(_owed.c.account == ledger.seller_payable(seller_id))


@dataclass(frozen=True)
class Period:
    """Payables that became owed at or after ``since`` and before ``until`` (None: unbounded)."""

    since: datetime | None = None
    until: datetime | None = None

    def of(self, query: Select[Any]) -> Select[Any]:
        if self.since is not None:
            query = query.where(_owed.c.created_at >= self.since)
        if self.until is not None:
            query = query.where(_owed.c.created_at < self.until)
        return query


async def by_seller(
    conn: AsyncConnection, period: Period, seller_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per seller (one, or all), of the payables that became owed in ``period``: how many
    orders, and of them those still owed and those cancelled since, in count and fen; and
    the totals of them all, whose ``orders`` counts an order of several sellers once (each
    seller's counts it too). One read: the totals are the rollup's row."""
    found = _of_seller(period.of(ROWS), seller_id).subquery()
    owed = found.c.status == "owed"
    cancelled = found.c.status == "cancelled"
    summed = (
        select(
            func.grouping(found.c.seller_id).label("all"),
            found.c.seller_id,
            func.count(found.c.order_id.distinct()).label("orders"),
            func.count().filter(owed).label("owed_orders"),
            func.coalesce(func.sum(found.c.amount_fen).filter(owed), 0).label("owed_fen"),
            func.count().filter(cancelled).label("cancelled_orders"),
            func.coalesce(func.sum(found.c.amount_fen).filter(cancelled), 0).label("cancelled_fen"),
        )
        .group_by(func.rollup(found.c.seller_id))
        .order_by(found.c.seller_id)
    )
    sellers, totals = [], {"orders": 0, "owed_fen": 0, "cancelled_fen": 0}
    for r in await conn.execute(summed):
        figures = {k: int(v) for k, v in r._mapping.items() if k not in ("all", "seller_id")}
        if r.all:
            totals = {k: figures[k] for k in totals}
        else:
            sellers.append({"seller_id": r.seller_id, **figures})
    return sellers, totals


async def orders_of(
    conn: AsyncConnection, seller_id: str, period: Period, start: Position | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """The seller's payables that became owed in ``period``, the last owed first, strictly
    after ``start``: order id, fen, status, when owed and cancelled; and the cursor to
    continue from if there are more."""
    query = _of_seller(period.of(ROWS.add_columns(CANCELLED_AT)), seller_id)
    found = (await conn.execute(newest_first(query, KEY, start, limit))).all()
    rows, next_cursor = page(found, limit, lambda r: (r.owed_at, r.order_id))
    return [dict(r._mapping) for r in rows], next_cursor
