"""What the orders service tells operations: orders by status (a metric) and stuck sagas."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query
from prometheus_client import Gauge
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orders.adapters.tables import orders
from services.orders.domain.order import Status
from shared.db import Database
from shared.http import BAD_INPUT, problem_responses, require
from shared.metrics import owned_by
from shared.status_gauge import StatusGauge

ORDERS = Gauge("caravan_orders", "Orders by status", ["status"])
OLDEST_PENDING = Gauge(
    "caravan_orders_oldest_pending_seconds",
    "How long the oldest pending order has waited since it was placed (0: none is pending)",
)
SAGA_DEADLINE = Gauge(
    "caravan_orders_saga_deadline_seconds",
    "CARAVAN_SAGA_DEADLINE_SECONDS: a pending order this old is cancelled expired",
)
owned_by("orders", ORDERS, OLDEST_PENDING, SAGA_DEADLINE)


def orders_by_status(engine: AsyncEngine, whole_every: float = 60.0) -> StatusGauge:
    """The ``caravan_orders`` gauge: pending orders at every sample (through their indexes),
    confirmed and cancelled ones up to ``whole_every`` behind; and, from the same reading,
    how long the oldest pending order has waited since it was placed
    (``caravan_orders_oldest_pending_seconds``, alert ``CaravanOrdersWaiting``): a backlog
    that orders merely queued behind (a burst, a service slow) would expire in, seen before
    they do, where ``caravan_orders_ended_total`` says it once they have."""
    return StatusGauge(
        engine,
        ORDERS,
        orders.c.status,
        get_args(Status),
        ("pending",),
        whole_every,
        orders.c.placed_at,
        OLDEST_PENDING,
    )


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
    orders: list[StuckOrder]  # the oldest ``limit``
    total: int  # all of them


def ops_router(db: Database, stuck_after: float) -> APIRouter:
    """``GET /ops/stuck-orders``: by default the orders pending over ``stuck_after`` seconds
    (:meth:`shared.settings.Settings.stuck_after_seconds`, which follows the saga deadline)."""
    router = APIRouter(
        tags=["operations"],
        dependencies=[require("ops")],
        responses=problem_responses({422: BAD_INPUT}),
    )

    @router.get("/ops/stuck-orders", response_model=StuckOrders)
    async def stuck_orders(
        older_than_seconds: Annotated[float | None, Query(ge=0, le=30 * 86400)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        """Orders still pending longer than ``older_than_seconds`` (by default 300, or half
        the saga deadline where that is shorter), oldest first, with the step each one waits
        for."""
        if older_than_seconds is None:
            older_than_seconds = stuck_after
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        stuck = (orders.c.status == "pending", orders.c.placed_at <= cutoff)
        async with db.engine.connect() as conn:
            total = await conn.scalar(select(func.count()).select_from(orders).where(*stuck))
            rows = await conn.execute(
                select(orders).where(*stuck).order_by(orders.c.placed_at).limit(limit)
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
        return StuckOrders(older_than_seconds=older_than_seconds, orders=found, total=total or 0)

    return router
