"""Queries behind the HTTP API (read only, no locks): one order with its timeline, and
pages of a buyer's orders (or, for an operator, of every buyer's), each within the reach of
the token asking (:func:`reach`)."""

from datetime import datetime
from typing import Any, get_args

from sqlalchemy import ColumnElement, Select, exists, func, or_, select, union_all
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from services.orders.adapters.tables import order_sellers, orders, timeline
from services.orders.domain.order import Status
from services.orders.entrypoints.schemas import OrderSummary, OrderView, Step
from shared.auth.tokens import Principal
from shared.pagination import Position, newest_first, page
from shared.topics import EventType

KEY = (orders.c.placed_at, orders.c.order_id)  # the listing's order, read newest first
STATUSES: tuple[Status, ...] = get_args(Status)


def reach(who: Principal) -> ColumnElement[bool] | None:
    """The orders ``who`` reaches: None, every order, for an unbound token; for a bound one,
    those it placed over HTTP and those of its sources. Whatever lies outside is, to it, as
    if it did not exist (a 404 as of an unknown id, missing from its lists)."""
    if who.sources is None:
        return None
    own = orders.c.placed_by == who.placer
    return or_(own, orders.c.source.in_(sorted(who.sources))) if who.sources else own


async def reaches(conn: AsyncConnection, order_id: str, within: ColumnElement[bool]) -> bool:
    """Whether the order ``order_id`` exists among those ``within`` takes (:func:`reach`)."""
    return bool(await conn.scalar(select(exists().where(orders.c.order_id == order_id, within))))


async def order_view(
    conn: AsyncConnection, order_id: str, within: ColumnElement[bool] | None = None
) -> OrderView | None:
    """The order with its timeline, read in one statement: in two, a confirmation committed
    between them showed as ``pending`` with ``order.confirmed`` in its own timeline. None
    when there is no such order among those ``within`` takes (:func:`reach`; None: all)."""
    of_order = order_sellers.c.order_id == orders.c.order_id
    sellers = select(
        func.array_agg(aggregate_order_by(order_sellers.c.seller_id, order_sellers.c.seller_id))
    )
    query = (
        select(
            orders,
            sellers.where(of_order).scalar_subquery().label("sellers"),
            timeline.c.type.label("step"),
            timeline.c.time.label("step_time"),
            timeline.c.amount_fen.label("step_fen"),
            timeline.c.reference.label("step_reference"),
        )
        .select_from(orders.outerjoin(timeline, timeline.c.order_id == orders.c.order_id))
        .where(orders.c.order_id == order_id)
        .order_by(timeline.c.id)
    )
    rows = (await conn.execute(query if within is None else query.where(within))).all()
    if not rows:
        return None
    row = rows[0]
    return OrderView(
        order_id=row.order_id,
        order_ref=row.order_ref,
        buyer_id=row.buyer_id,
        source=row.source,
        status=row.status,
        total_fen=row.total_fen,
        reason=row.reason,
        skus=row.skus,
        lines=row.lines,
        sellers=row.sellers,
        delivery=row.delivery,
        delivery_erased_at=erased.isoformat() if (erased := row.delivery_erased_at) else None,
        timeline=[
            Step(
                type=s.step,
                time=s.step_time.isoformat(),
                amount_fen=s.step_fen,
                reference=s.step_reference,
                skus=row.skus if s.step == EventType.ORDER_CANCELLED else None,
                # Nothing voids a confirmed order's payment but an operator after the sale:
                # a cancellation or an expiry ends the order unconfirmed.
                after_sale=s.step == EventType.PAYMENT_VOIDED and row.status == "confirmed",
            )
            for s in rows
            if s.step is not None
        ],
    )


def listed(
    buyer_id: str | None,
    start: Position | None,
    limit: int,
    placed: tuple[datetime | None, datetime | None] = (None, None),
    within: ColumnElement[bool] | None = None,
    **only: str | None,
) -> Select[Any]:
    """The statement of :func:`buyer_orders`: ``limit`` and one more orders, newest first,
    of those ``within`` takes (:func:`reach`; None: all).

    Every buyer's orders of any status are the newest of each status's newest (PostgreSQL
    merges them, each read backwards along ``orders_status_placed`` and stopping at the
    page): read in one, they were every order of every season sorted, for want of an index
    on the time placed alone, which would cost every order's insert and update. A buyer's
    orders, a status's and an order_ref's read by their own indexes; a product's (``sku``) by
    the index of the lines, a seller's (``seller``) by ``order_sellers``, each order found
    then sorted: a product or a seller of a county has hundreds of orders a season, not the
    whole table's."""
    query = select(orders) if within is None else select(orders).where(within)
    sku, seller = only.pop("sku", None), only.pop("seller", None)
    if sku is not None:
        query = query.where(orders.c.lines.contains([{"sku": sku}]))
    if seller is not None:
        of_seller = select(order_sellers.c.order_id).where(order_sellers.c.seller_id == seller)
        query = query.where(orders.c.order_id.in_(of_seller))
    for name, value in {"buyer_id": buyer_id, **only}.items():
        if value is not None:
            query = query.where(orders.c[name] == value)
    since, until = placed
    if since is not None:
        query = query.where(orders.c.placed_at >= since)
    if until is not None:
        query = query.where(orders.c.placed_at < until)
    narrow = (buyer_id, only.get("status"), only.get("order_ref"), sku, seller)
    if any(v is not None for v in narrow):
        return newest_first(query, KEY, start, limit)
    each = union_all(
        *(newest_first(query.where(orders.c.status == s), KEY, start, limit) for s in STATUSES)
    ).subquery("each_status")
    return newest_first(select(each), (each.c.placed_at, each.c.order_id), None, limit)


async def buyer_orders(
    conn: AsyncConnection,
    buyer_id: str | None,
    start: Position | None,
    limit: int,
    placed: tuple[datetime | None, datetime | None] = (None, None),
    within: ColumnElement[bool] | None = None,
    /,
    **only: str | None,
) -> tuple[list[OrderSummary], str | None]:
    """Up to ``limit`` orders of a buyer (None: any buyer's), newest first, strictly after
    ``start``; and the cursor to continue from if there are more. ``placed`` narrows them to
    those placed at or after its first time and before its second (None: no bound);
    ``within`` to those a token reaches (:func:`reach`; None: all); ``only`` to those whose
    columns (``status``, ``reason``, ``source``, ``order_ref``) have the values given, and to
    those with a line of the product ``sku`` or goods of the seller ``seller`` (None: any)."""
    query = listed(buyer_id, start, limit, placed, within, **only)
    found = (await conn.execute(query)).all()
    rows, next_cursor = page(found, limit, lambda r: (r.placed_at, r.order_id))
    items = [
        OrderSummary(
            order_id=r.order_id,
            order_ref=r.order_ref,
            buyer_id=r.buyer_id,
            source=r.source,
            status=r.status,
            total_fen=r.total_fen,
            reason=r.reason,
            skus=r.skus,
            placed_at=r.placed_at.isoformat(),
        )
        for r in rows
    ]
    return items, next_cursor
