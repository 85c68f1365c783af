"""Queries behind the HTTP API (read only, no locks): one order with its timeline, and
pages of a buyer's orders."""

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.orders.adapters.tables import orders, timeline
from services.orders.entrypoints.pagination import Position
from services.orders.entrypoints.schemas import OrderSummary, OrderView, Status, Step


async def order_view(conn: AsyncConnection, order_id: str) -> OrderView | None:
    """The order with its timeline, read in one statement: in two, a confirmation committed
    between them showed as ``pending`` with ``order.confirmed`` in its own timeline."""
    rows = (
        await conn.execute(
            select(orders, timeline.c.type.label("step"), timeline.c.time.label("step_time"))
            .select_from(orders.outerjoin(timeline, timeline.c.order_id == orders.c.order_id))
            .where(orders.c.order_id == order_id)
            .order_by(timeline.c.id)
        )
    ).all()
    if not rows:
        return None
    row = rows[0]
    return OrderView(
        order_id=row.order_id,
        order_ref=row.order_ref,
        status=row.status,
        total_fen=row.total_fen,
        reason=row.reason,
        delivery=row.delivery,
        timeline=[
            Step(type=s.step, time=s.step_time.isoformat()) for s in rows if s.step is not None
        ],
    )


async def buyer_orders(
    conn: AsyncConnection,
    buyer_id: str,
    status: Status | None,
    after: Position | None,
    limit: int,
) -> tuple[list[OrderSummary], Position | None]:
    """Up to ``limit`` orders of a buyer, newest first, strictly after ``after``; and the
    position to continue from if there may be more."""
    query = select(orders).where(orders.c.buyer_id == buyer_id)
    if status is not None:
        query = query.where(orders.c.status == status)
    if after is not None:
        query = query.where(
            or_(
                orders.c.placed_at < after.placed_at,
                and_(orders.c.placed_at == after.placed_at, orders.c.order_id < after.order_id),
            )
        )
    query = query.order_by(orders.c.placed_at.desc(), orders.c.order_id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        OrderSummary(
            order_id=r.order_id,
            order_ref=r.order_ref,
            source=r.source,
            status=r.status,
            total_fen=r.total_fen,
            reason=r.reason,
            placed_at=r.placed_at.isoformat(),
        )
        for r in rows
    ]
    last = rows[-1] if more else None
    return items, None if last is None else Position(last.placed_at, last.order_id)
