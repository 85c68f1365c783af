"""What the orders service tells operations: orders by status (a metric) and stuck sagas."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from prometheus_client import Gauge
from pydantic import BaseModel
from sqlalchemy import func, select

from services.orders.adapters.tables import orders
from shared.db import Database
from shared.http import require

ORDERS = Gauge("caravan_orders", "Orders by status", ["status"])


async def sample_orders_by_status(db: Database) -> None:
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status))
        for status, count in rows:
            ORDERS.labels(status).set(count)


class StuckOrder(BaseModel):
    order_id: str
    order_ref: str
    source: str
    placed_at: datetime
    deadline_at: datetime
    stock: str
    payment: str


class StuckOrders(BaseModel):
    older_than_seconds: float
    orders: list[StuckOrder]


def ops_router(db: Database) -> APIRouter:
    router = APIRouter(tags=["operations"], dependencies=[require("ops")])

    @router.get("/ops/stuck-orders", response_model=StuckOrders)
    async def stuck_orders(
        older_than_seconds: Annotated[float, Query(ge=0, le=30 * 86400)] = 300.0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        """Orders still pending longer than ``older_than_seconds``, oldest first, with the
        step each one waits for."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                select(orders)
                .where(orders.c.status == "pending", orders.c.placed_at <= cutoff)
                .order_by(orders.c.placed_at)
                .limit(limit)
            )
            found = [
                StuckOrder(
                    order_id=r.order_id,
                    order_ref=r.order_ref,
                    source=r.source,
                    placed_at=r.placed_at,
                    deadline_at=r.deadline_at,
                    stock=r.stock,
                    payment=r.payment,
                )
                for r in rows
            ]
        return StuckOrders(older_than_seconds=older_than_seconds, orders=found)

    return router
