"""The storefront HTTP API of the orders service (see CONTRACT.md, HTTP)."""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import FastAPI, Header
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from services.orders import handlers
from services.orders.adapters.tables import orders, timeline
from shared.events.orders import ORDER_REF_PATTERN, OrderRequested
from shared.http import create_app as create_base_app
from shared.http import invalid, problem
from shared.messaging.uow import UnitOfWork


class Accepted(BaseModel):
    order_id: str
    status: str


class Step(BaseModel):
    type: str
    time: str


class OrderView(BaseModel):
    order_id: str
    order_ref: str
    status: str
    total_fen: int | None
    reason: str | None
    timeline: list[Step]


def create_app(uow: UnitOfWork, deadline: timedelta) -> FastAPI:
    app = create_base_app("Caravan orders", uow.db)

    @app.post(
        "/orders",
        status_code=202,
        response_model=Accepted,
        responses={409: {"description": "same key, different body"}, 422: {}},
    )
    async def place(
        body: dict[str, Any],
        idempotency_key: Annotated[str, Header(pattern=ORDER_REF_PATTERN)],
    ) -> Any:
        body_ref = body.get("order_ref")
        if body_ref is not None and body_ref != idempotency_key:
            return problem(
                422,
                "Invalid request",
                "order_ref differs from the Idempotency-Key header",
                errors=[{"field": "order_ref", "message": "must equal the Idempotency-Key"}],
            )
        try:
            request = OrderRequested.model_validate({**body, "order_ref": idempotency_key})
        except ValidationError as exc:
            return invalid(exc, "Invalid order")
        async with uow.begin() as tx:
            placed = await handlers.place_order(tx, request, "http", deadline)
        if not placed.same_request:
            return problem(
                409,
                "Idempotency-Key reused",
                "this key was used for a different order",
                order_id=placed.order_id,
            )
        return Accepted(order_id=placed.order_id, status=placed.status)

    @app.get("/orders/{order_id}", response_model=OrderView, responses={404: {}})
    async def get_order(order_id: str) -> Any:
        async with uow.db.engine.connect() as conn:
            row = (await conn.execute(select(orders).where(orders.c.order_id == order_id))).first()
            if row is None:
                return problem(404, "Order not found", f"no order {order_id}")
            steps = await conn.execute(
                select(timeline.c.type, timeline.c.time)
                .where(timeline.c.order_id == order_id)
                .order_by(timeline.c.id)
            )
            return OrderView(
                order_id=row.order_id,
                order_ref=row.order_ref,
                status=row.status,
                total_fen=row.total_fen,
                reason=row.reason,
                timeline=[Step(type=s.type, time=s.time.isoformat()) for s in steps],
            )

    return app
