"""The payments admin API: one router per surface (credit lines; loans and repayments), so
that each can be given its own authentication scope (``credit:write`` ...) when it comes.

- ``GET /credit-lines/{buyer_id}``: limit, outstanding principal, available credit.
- ``PUT /credit-lines/{buyer_id}`` ``{"credit_limit_fen"}``: create or set the limit.
- ``POST /credit-lines/{buyer_id}/adjustments`` ``{"delta_fen"}``: raise or lower it.
- ``GET /loans/{loan_id}``: the loan, its schedule (paid, overdue), outstanding principal.
- ``GET /orders/{order_id}/payment``: the payment of an order (status, method, loan id).
- ``POST /loans/{loan_id}/repayments`` ``{"amount_fen"}`` (omit it to repay in full), header
  ``Idempotency-Key``: 201 with the allocation and the loan after it; the same key again
  returns 200 and the same repayment; 409 if the loan is not active, 422 for an overpayment.
"""

from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.payments import lending
from services.payments.adapters.tables import payments
from services.payments.domain.repayment import Overpayment
from shared.http import problem
from shared.messaging.uow import UnitOfWork

KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"


class SetLimit(BaseModel):
    credit_limit_fen: int = Field(ge=0, strict=True)


class Adjust(BaseModel):
    delta_fen: int = Field(strict=True)


class Repay(BaseModel):
    amount_fen: int | None = Field(None, gt=0, strict=True)


def _today() -> date:
    return datetime.now(UTC).date()


def _json(value: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(_jsonable(asdict(value)), status_code=status)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def credit_router(uow: UnitOfWork) -> APIRouter:
    router = APIRouter(prefix="/credit-lines", tags=["credit"])

    @router.get("/{buyer_id}", responses={404: {}})
    async def get_line(buyer_id: str) -> Any:
        async with uow.db.engine.connect() as conn:
            try:
                return _json(await lending.credit_line(conn, buyer_id))
            except lending.NotFound as exc:
                return problem(404, "Credit line not found", str(exc))

    @router.put("/{buyer_id}", responses={422: {}})
    async def set_line(buyer_id: str, body: SetLimit) -> Any:
        async with uow.begin() as tx:
            return _json(await lending.set_credit_limit(tx, buyer_id, body.credit_limit_fen))

    @router.post("/{buyer_id}/adjustments", responses={404: {}, 409: {}})
    async def adjust(buyer_id: str, body: Adjust) -> Any:
        try:
            async with uow.begin() as tx:
                return _json(await lending.adjust_credit_limit(tx, buyer_id, body.delta_fen))
        except lending.NotFound as exc:
            return problem(404, "Credit line not found", str(exc))
        except lending.Conflict as exc:
            return problem(409, "Limit would be negative", str(exc))

    return router


def loans_router(uow: UnitOfWork) -> APIRouter:
    router = APIRouter(tags=["loans"])

    @router.get("/loans/{loan_id}", responses={404: {}})
    async def get_loan(loan_id: str) -> Any:
        async with uow.db.engine.connect() as conn:
            try:
                return _json(await lending.loan_view(conn, loan_id, _today()))
            except lending.NotFound as exc:
                return problem(404, "Loan not found", str(exc))

    @router.get("/orders/{order_id}/payment", responses={404: {}})
    async def get_payment(order_id: str) -> Any:
        async with uow.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        payments.c.order_id,
                        payments.c.status,
                        payments.c.method,
                        payments.c.amount_fen,
                        payments.c.loan_id,
                        payments.c.attempts,
                    ).where(payments.c.order_id == order_id)
                )
            ).first()
        if row is None:
            return problem(404, "Payment not found", f"no payment for order {order_id}")
        return dict(row._mapping)

    @router.post("/loans/{loan_id}/repayments", responses={404: {}, 409: {}, 422: {}})
    async def repay(
        loan_id: str,
        body: Repay,
        idempotency_key: Annotated[str, Header(pattern=KEY_PATTERN)],
    ) -> Any:
        try:
            async with uow.begin() as tx:
                done = await lending.repay(tx, loan_id, idempotency_key, body.amount_fen, _today())
        except lending.NotFound as exc:
            return problem(404, "Loan not found", str(exc))
        except lending.Conflict as exc:
            return problem(409, "Repayment refused", str(exc))
        except Overpayment as exc:
            return problem(422, "Overpayment", str(exc))
        return _json(done, 201 if done.created else 200)

    return router
