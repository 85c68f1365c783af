"""The payments admin API: one router per surface (credit lines; loans, repayments and
payments; sellers' payables). Writes need the scope ``credit:write`` (an operator's write to
a payment: ``ops``) and are written to the audit trail; reads need ``credit:read`` (or
``credit:write``; the lists and an order's payment ``ops`` too), and the payables ``ops``.

- ``GET /credit-lines/{buyer_id}``: limit, outstanding principal, available credit.
- ``PUT /credit-lines/{buyer_id}`` ``{"credit_limit_fen"}``: create or set the limit (at most
  ``shared.seed.MAX_CREDIT_LIMIT_FEN``, as in a seed file).
- ``POST /credit-lines/{buyer_id}/adjustments`` ``{"delta_fen"}``: raise or lower it (409 for
  a limit that would go below 0 or above that bound); with
  an ``Idempotency-Key`` header applied once (``"applied": false`` for the same key again,
  409 for the same key with another delta). Without one, every call is applied.
- ``GET /loans?buyer_id=&status=&overdue=`` (scope ``ops`` too): the loan book, the newest
  first, paged: each loan's principal, outstanding principal, what is left to pay, what is
  overdue today and its next instalment's day.
- ``GET /repayments?buyer_id=&since=&until=`` (scope ``ops`` too): the repayments recorded
  in a time, the newest first, paged, with the totals of all of them.
- ``GET /loans/{loan_id}``: the loan, its schedule (paid, overdue), outstanding principal,
  and ``refund_owed_fen``: what the buyer repaid on it before it was voided, owed back.
- ``GET /orders/{order_id}/payment``: the payment of an order (status, method, loan id, the
  gateway calls' attempts, how many of them never reached it (``unreached``) and the last
  error they met, kept once answered, the hold's time its charge is made by (``held_until``:
  one the gateway saw none of is declined ``expired`` after it); a
  ``void_refused`` one's ``refund_owed_fen`` and ``gateway_refusal``; a voided loan's
  ``refund_owed_fen``: what its buyer had repaid, owed back (null: nothing); a ``refunded``
  one's ``refund_owed_fen`` (what was paid back), ``refund_reference``, ``refunded_at`` and
  ``refunded_by`` too).
- ``GET /payments?status=&since=&until=`` (scope ``ops``, or a credit scope; ``GET
  /orders/{id}/payment`` too): the payments of a status, the last changed first (those last
  changed in a time, or every one), paged (``cursor``, ``limit``):
  ``void_refused``: those whose buyer is owed a refund by hand; ``voided``: among them, the
  loans with a ``refund_owed_fen``, whose buyer is owed back what they repaid.
- ``POST /orders/{order_id}/payment/refund`` ``{"reference", "reason"}`` (scope ``ops``):
  operations refunded by hand the buyer of a ``void_refused`` payment, or of a voided loan
  what they had repaid: it is ``refunded`` (audited; said as ``payment.refunded``); the same
  reference and reason again answer the payment as it is, ``"applied": false`` (true: this
  call recorded it); 409 for a payment owing nothing back, or the same reference with another
  reason.
- ``POST /orders/{order_id}/payment/void`` ``{"reason", "orders_answered"}`` (scope ``ops``):
  void the payment of an order the orders service never had (``orders_answered``: 404, a
  forged ``stock.reserved``), or of a confirmed order after its sale (``"confirmed"``: its
  buyer refunded after delivery), as a cancellation would (:mod:`services.payments.voids`),
  audited; the route trusts the caller's word of what the orders API answered. Asked again:
  the same answer, nothing voided twice; 409 for a payment holding nothing to void, or voided
  on the other word (saying how and when).
- ``POST /orders/{order_id}/payment/charge-lost`` ``{"reason"}`` (scope ``ops``): an operator
  says the gateway lost a charge it approved, whose void it answers 404, no such charge, made
  again and again: at its next such answer the void is refused for good (``void_refused``,
  owed back by hand); audited. Asked again: the same answer; 409 for a payment not
  ``voiding`` a posted charge.
- ``GET /payables?since=&until=&seller_id=`` (scope ``ops``): what each seller is owed for
  the orders whose payment was authorised in the period (:mod:`services.payments.payables`):
  per seller the orders, those still owed and those cancelled since (a refund after the
  sale, a void), in count and fen, and the totals; reads only.
- ``GET /payables/{seller_id}/orders?since=&until=&cursor=&limit=`` (scope ``ops``): that
  seller's, the last owed first: order, fen, status, when owed and when cancelled.
- ``POST /loans/{loan_id}/repayments`` ``{"amount_fen"}`` (omit it to repay in full), header
  ``Idempotency-Key``: 201 with the allocation and the loan after it; the same key again
  returns 200 and the same repayment; 409 if the loan is not active, 422 for an overpayment.
"""

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payments import lending, payables, prepaid, voids
from services.payments.domain.repayment import Overpayment
from services.payments.domain.status import Status
from shared import days
from shared.auth import audit
from shared.auth.tokens import Principal
from shared.events.envelope import MAX_FEN, WHOLE_SEGMENTS
from shared.events.orders import ORDER_REF_PATTERN
from shared.http import (
    BAD_INPUT,
    LINE_BREAK,
    NO_NUL,
    UNTIL_NOT_AFTER_SINCE,
    Time,
    problem,
    problem_responses,
    refused_period,
    require,
)
from shared.ids import as_stored
from shared.messaging.uow import Tx, UnitOfWork
from shared.pagination import Limit, Position, cursor_after
from shared.seed import MAX_CREDIT_LIMIT_FEN, CreditLimit

KEY_PATTERN = ORDER_REF_PATTERN  # an Idempotency-Key as POST /orders takes it
Writer = Annotated[Principal, require("credit:write")]
READ = [require("credit:read", "credit:write")]
PAYMENT_READ = [require("ops", "credit:read", "credit:write")]  # operations find refunds owed
PAYMENTS_CURSOR = cursor_after(datetime, str)  # after a payment's (updated_at, order_id)
LOANS_CURSOR = cursor_after(datetime, str)  # after a loan's (created_at, loan_id)
REPAYMENTS_CURSOR = cursor_after(datetime, str, str)  # (created_at, loan_id, its key)
OfBuyer = Annotated[
    str | None,
    Query(min_length=1, max_length=64, description="only those of this buyer's loans"),
    NO_NUL,
]
Operator = Annotated[Principal, require("ops")]
PAYABLES_CURSOR = cursor_after(datetime, str)  # after a payable's (owed_at, order_id)
Since = Annotated[
    Time | None, Query(description="only the payables owed (payment authorised) at or after")
]
Until = Annotated[Time | None, Query(description="only the payables owed before this time")]
Id = Annotated[str, Path(min_length=1, max_length=64), NO_NUL, WHOLE_SEGMENTS]
# An order's or a loan's id: a UUID, taken in upper case too (kept in lower case).
UuidId = Annotated[Id, AfterValidator(lambda given: as_stored(given) or given)]


class SetLimit(BaseModel):
    credit_limit_fen: CreditLimit


class Adjust(BaseModel):
    delta_fen: int = Field(strict=True, ge=-MAX_CREDIT_LIMIT_FEN, le=MAX_CREDIT_LIMIT_FEN)


class RefundMade(BaseModel):
    reference: str = Field(min_length=1, max_length=128)  # the bank's or gateway's transfer
    reason: str = Field(min_length=1, max_length=256)


class VoidByOperator(BaseModel):
    reason: str = Field(min_length=1, max_length=256)  # for the audit trail
    orders_answered: Literal[404, "confirmed"] = Field(
        description="what the orders API answered `GET /orders/{order_id}`: 404, it never had"
        ' the order; "confirmed", the order\'s status: its buyer was refunded after the sale'
        " (the route takes this word, and does not ask)"
    )
    orders_asked: str | None = Field(
        None, max_length=512, description="the orders API that was asked, for the audit trail"
    )


class ChargeLost(BaseModel):
    reason: str = Field(min_length=1, max_length=256)  # for the audit trail


class Repay(BaseModel):
    amount_fen: int | None = Field(None, gt=0, le=MAX_FEN, strict=True)


def _json(value: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(_view(value), status_code=status)


def _view(value: Any) -> Any:
    return _jsonable(asdict(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


async def _audited(
    tx: Tx,
    who: Principal,
    action: str,
    order_id: str,
    done: prepaid.Change | None,
    detail: dict[str, Any],
) -> None:
    """Audit an operator's write to a payment (``action``), once it changed the payment: the
    same write again changes nothing, and adds no second row."""
    if done is not None and done.applied:
        await audit.record(
            tx.conn,
            who.name,
            action,
            order_id,
            before=_jsonable(done.before),
            after=_jsonable(done.after),
            detail=detail,
        )


async def _operators_write(
    uow: UnitOfWork,
    who: Principal,
    action: str,
    order_id: str,
    detail: dict[str, Any],
    write: Callable[[Tx], Awaitable[prepaid.Change | None]],
    refused: type[prepaid.Refused],
) -> Any:
    """An operator's write to the payment of ``order_id`` (``write``), audited as ``action``
    with ``detail``: the payment after it and whether it changed it (``applied``); 404; or 409
    if it raises ``refused``, titled by the exception's own ``title`` (a subclass's, as
    :class:`voids.VoidedTheOtherWay`'s, its own)."""
    try:
        async with uow.begin() as tx:
            done = await write(tx)
            await _audited(tx, who, action, order_id, done, detail)
    except refused as exc:
        return problem(409, exc.title, str(exc))
    if done is None:
        return problem(404, "Payment not found", f"no payment for order {order_id}")
    return _jsonable({**done.after, "applied": done.applied})


def credit_router(uow: UnitOfWork) -> APIRouter:
    router = APIRouter(
        prefix="/credit-lines", tags=["credit"], responses=problem_responses({422: BAD_INPUT})
    )
    no_line = "no credit line for this buyer"

    @router.get("/{buyer_id:path}", responses=problem_responses({404: no_line}), dependencies=READ)
    async def get_line(buyer_id: Id) -> Any:
        async with uow.db.engine.connect() as conn:
            try:
                return _json(await lending.credit_line(conn, buyer_id))
            except lending.NotFound as exc:
                return problem(404, "Credit line not found", str(exc))

    @router.put("/{buyer_id:path}", responses=problem_responses({404: LINE_BREAK}, writes=True))
    async def set_line(buyer_id: Id, body: SetLimit, who: Writer) -> Any:
        async with uow.begin() as tx:
            before, line = await lending.set_credit_limit(tx, buyer_id, body.credit_limit_fen)
            if before != line:  # the same limit again changed nothing: no audit row
                was = None if before is None else _view(before)
                await audit.record(
                    tx.conn, who.name, "credit.set", buyer_id, before=was, after=_view(line)
                )
            return _json(line)

    @router.post(
        "/{buyer_id:path}/adjustments",
        responses=problem_responses(
            {
                404: no_line,
                409: "the limit would leave its bounds, or the key was used for another delta",
            },
            writes=True,
        ),
    )
    async def adjust(
        buyer_id: Id,
        body: Adjust,
        who: Writer,
        idempotency_key: Annotated[str | None, Header(pattern=KEY_PATTERN)] = None,
    ) -> Any:
        try:
            async with uow.begin() as tx:
                await lending.lock_credit_line(tx, buyer_id)  # before, as the change finds it
                before = await _line_or_none(tx.conn, buyer_id)
                line, applied = await lending.adjust_credit_limit(
                    tx, buyer_id, body.delta_fen, idempotency_key
                )
                if applied:
                    await audit.record(
                        tx.conn,
                        who.name,
                        "credit.adjust",
                        buyer_id,
                        before=before,
                        after=_view(line),
                        detail={"delta_fen": body.delta_fen, "key": idempotency_key},
                    )
                return JSONResponse({**_view(line), "applied": applied})
        except lending.NotFound as exc:
            return problem(404, "Credit line not found", str(exc))
        except lending.Conflict as exc:
            return problem(409, "Adjustment refused", str(exc))

    return router


async def _line_or_none(conn: AsyncConnection, buyer_id: str) -> Any:
    try:
        return _view(await lending.credit_line(conn, buyer_id))
    except lending.NotFound:
        return None


def loans_router(uow: UnitOfWork) -> APIRouter:
    router = APIRouter(tags=["loans"], responses=problem_responses({422: BAD_INPUT}))
    no_loan = "no loan with this id"

    @router.get("/loans", dependencies=PAYMENT_READ)
    async def list_loans(
        buyer_id: OfBuyer = None,
        status: Annotated[
            lending.LoanStatus | None, Query(description="only the loans of this status")
        ] = None,
        overdue: Annotated[
            bool, Query(description="only the active loans with an instalment overdue")
        ] = False,
        start: Position | None = LOANS_CURSOR,
        limit: Limit = 20,
    ) -> Any:
        """The loan book: loans of a buyer, of a status, or only those overdue, the newest
        first, each with its principal, outstanding principal, what is left to pay, what is
        overdue today and the day its next instalment falls due; follow ``next_cursor``."""
        async with uow.db.engine.connect() as conn:
            items, next_cursor = await lending.loan_book(
                conn,
                days.today(),
                buyer_id=buyer_id,
                status=status,
                overdue_only=overdue,
                start=start,
                limit=limit,
            )
        return {"items": [_view(i) for i in items], "next_cursor": next_cursor}

    @router.get(
        "/repayments",
        responses=problem_responses({422: f"{BAD_INPUT}, or {UNTIL_NOT_AFTER_SINCE}"}),
        dependencies=PAYMENT_READ,
    )
    async def list_repayments(
        buyer_id: OfBuyer = None,
        since: Annotated[Time | None, Query(description="recorded at or after this time")] = None,
        until: Annotated[Time | None, Query(description="recorded before this time")] = None,
        start: Position | None = REPAYMENTS_CURSOR,
        limit: Limit = 20,
    ) -> Any:
        """The repayments recorded in a time (a month's), of a buyer's loans or every one,
        the newest first, each with its loan, order and buyer and how it was split between
        principal and interest; ``totals``: of all of them, every page's; follow
        ``next_cursor``. ``until`` not after ``since`` is a 422, as every time's."""
        if (backwards := refused_period(since, until)) is not None:
            return backwards
        async with uow.db.engine.connect() as conn:
            items, next_cursor, totals = await lending.repayments_made(
                conn, buyer_id=buyer_id, since=since, until=until, start=start, limit=limit
            )
        return {"items": [_view(i) for i in items], "next_cursor": next_cursor, "totals": totals}

    @router.get("/loans/{loan_id}", responses=problem_responses({404: no_loan}), dependencies=READ)
    async def get_loan(loan_id: UuidId) -> Any:
        async with uow.db.engine.connect() as conn:
            try:
                return _json(await lending.loan_view(conn, loan_id, days.today()))
            except lending.NotFound as exc:
                return problem(404, "Loan not found", str(exc))

    @router.get(
        "/orders/{order_id}/payment",
        responses=problem_responses({404: "no payment for this order"}),
        dependencies=PAYMENT_READ,
    )
    async def get_payment(order_id: UuidId) -> Any:
        async with uow.db.engine.connect() as conn:
            found = await prepaid.payment_view(conn, order_id)
        if found is None:
            return problem(404, "Payment not found", f"no payment for order {order_id}")
        return _jsonable(found)

    @router.get(
        "/payments",
        tags=["payments"],
        responses=problem_responses({422: f"{BAD_INPUT}, or {UNTIL_NOT_AFTER_SINCE}"}),
        dependencies=PAYMENT_READ,
    )
    async def list_payments(
        status: Annotated[Status, Query(description="only the payments of this status")],
        since: Annotated[Time | None, Query(description="last changed at or after this time")] = (
            None
        ),
        until: Annotated[Time | None, Query(description="last changed before this time")] = None,
        start: Position | None = PAYMENTS_CURSOR,
        limit: Limit = 20,
    ) -> Any:
        """The payments of a status, the last changed first (``void_refused``: those whose
        buyer is owed a refund by hand; ``voided``: a loan's with ``refund_owed_fen`` too),
        those last changed in a time (a week's: ``since``, ``until``) or every one, each as
        ``GET /orders/{id}/payment`` shows it with its ``buyer_id`` and ``updated_at``; follow
        ``next_cursor``. ``until`` not after ``since`` is a 422, as every time's."""
        if (backwards := refused_period(since, until)) is not None:
            return backwards
        async with uow.db.engine.connect() as conn:
            items, next_cursor = await prepaid.payments_of(conn, status, start, limit, since, until)
        return {"items": _jsonable(items), "next_cursor": next_cursor}

    @router.post(
        "/orders/{order_id}/payment/refund",
        responses=problem_responses(
            {
                404: "no payment for this order",
                409: "the payment owes nothing back: neither void_refused nor a voided loan"
                " with repayments (or it was refunded under another reference, or under this"
                " one for another reason)",
            },
            writes=True,
        ),
    )
    async def refund(order_id: UuidId, body: RefundMade, who: Operator) -> Any:
        """Record that operations refunded by hand the buyer of a ``void_refused`` payment, or
        of a voided loan what they had repaid on it (``reference``: the bank's or gateway's
        transfer): it is ``refunded`` (``refund_owed_fen``: what was paid back), the ledger
        owes the buyer nothing more, the audit trail says who and why, and
        ``payment.refunded`` says it. The same reference and reason again answer the same,
        changing nothing (``"applied": false``; true: this call recorded it); the same
        reference with another reason is a 409 naming the reason recorded."""
        return await _operators_write(
            uow,
            who,
            "payment.refund",
            order_id,
            {"reference": body.reference, "reason": body.reason},
            lambda tx: prepaid.record_refund(tx, order_id, body.reference, body.reason, who.name),
            prepaid.NotRefundable,
        )

    @router.post(
        "/orders/{order_id}/payment/void",
        responses=problem_responses(
            {
                404: "no payment for this order",
                409: "the payment holds no money to void (declined, cancelled, voided by its"
                " order's cancellation, or owed back by hand), or, orders_answered confirmed,"
                " it is not authorized (a pending order's), or an operator voided it on the"
                " other word of orders (the detail says which, when, by whom and why)",
            },
            writes=True,
        ),
    )
    async def void(order_id: UuidId, body: VoidByOperator, who: Operator) -> Any:
        """Void the payment of an order the orders service never had (its ``GET
        /orders/{id}`` answered 404: a forged ``stock.reserved``, a copy of a platform's order
        under another id), or of a confirmed order whose buyer was refunded after the sale
        (it answered ``confirmed``; the order stays confirmed), as a cancellation would: a
        loan voided and its credit given back, its instalments no longer due, what the buyer
        repaid owed back; a prepaid charge ``voiding`` (the gateway told to void it); a
        platform's collection reversed; the sellers' payables cancelled; ``payment.voided``
        said. Audited (``payment.void_unplaced``, ``payment.void_after_sale``), and kept on
        the payment (``unplaced_at``, ``unplaced_by``, ``unplaced_reason``, or
        ``voided_after_sale_at``, ``_by``, ``_reason``). Asked again on the same word of
        orders, it answers the payment as it is, voiding nothing twice (the first reason
        stands); on the other word (voided as never placed, asked as confirmed, or the other
        way round), 409 saying how, when, by whom and why it was voided, nothing changed.
        Payments cannot tell what orders has of the order: it takes ``orders_answered`` as
        said, but for a payment not ``authorized``, which no confirmed order has (409)."""
        after_sale = body.orders_answered == "confirmed"
        return await _operators_write(
            uow,
            who,
            "payment.void_after_sale" if after_sale else "payment.void_unplaced",
            order_id,
            {
                "reason": body.reason,
                "orders_answered": body.orders_answered,
                "orders_asked": body.orders_asked,
            },
            lambda tx: voids.void_by_operator(
                tx, order_id, body.reason, who.name[:128], after_sale=after_sale
            ),
            voids.NotVoidable,
        )

    @router.post(
        "/orders/{order_id}/payment/charge-lost",
        responses=problem_responses(
            {
                404: "no payment for this order",
                409: "the payment is not voiding a charge posted",
            },
            writes=True,
        ),
    )
    async def charge_lost(order_id: UuidId, body: ChargeLost, who: Operator) -> Any:
        """Say the gateway lost the charge of a ``voiding`` payment: it approved the charge,
        and answers its void 404, no such charge, made again and again (the alert
        ``CaravanPaymentGatewayCallsStuck``), the base URL being right. Kept in
        ``gateway_refusal`` and the void made again now: at its next 404 the void is refused
        for good, ``void_refused``, what the buyer paid owed back by hand (then ``POST
        .../payment/refund``); a void the gateway makes after all ends ``voided``. Audited
        (``payment.charge_lost``). Asked again, it answers the payment as it is."""
        said = f"the gateway lost the charge, said {who.name[:128]}: {body.reason}"
        return await _operators_write(
            uow,
            who,
            "payment.charge_lost",
            order_id,
            {"reason": body.reason},
            lambda tx: prepaid.mark_lost(tx, order_id, said),
            prepaid.NotLost,
        )

    @router.post(
        "/loans/{loan_id}/repayments",
        status_code=201,
        responses={
            200: {
                "description": "the same Idempotency-Key again: the same repayment",
                "content": {"application/json": {}},
            },
            **problem_responses(
                {
                    404: no_loan,
                    409: "the loan is not active, or the key was used for another repayment",
                    422: f"{BAD_INPUT}, or more than the loan owes",
                },
                writes=True,
            ),
        },
    )
    async def repay(
        loan_id: UuidId,
        body: Repay,
        who: Writer,
        idempotency_key: Annotated[str, Header(pattern=KEY_PATTERN)],
    ) -> Any:
        try:
            async with uow.begin() as tx:
                await lending.lock_loan(tx, loan_id)  # before, as the repayment finds it
                before = _view(await lending.loan_view(tx.conn, loan_id, days.today()))
                done = await lending.repay(
                    tx, loan_id, idempotency_key, body.amount_fen, days.today()
                )
                if done.created:
                    await audit.record(
                        tx.conn,
                        who.name,
                        "loan.repay",
                        loan_id,
                        before=before,
                        after=_view(done.loan),
                        detail={
                            "repayment_id": done.repayment_id,
                            "amount_fen": done.amount_fen,
                            "key": idempotency_key,
                        },
                    )
        except lending.NotFound as exc:
            return problem(404, "Loan not found", str(exc))
        except lending.Conflict as exc:
            return problem(409, "Repayment refused", str(exc))
        except Overpayment as exc:
            return problem(422, "Overpayment", str(exc))
        return _json(done, 201 if done.created else 200)

    return router


def payables_router(uow: UnitOfWork) -> APIRouter:
    router = APIRouter(
        prefix="/payables",
        tags=["payables"],
        responses=problem_responses({422: f"{BAD_INPUT}, or {UNTIL_NOT_AFTER_SINCE}"}),
        dependencies=[require("ops")],
    )

    def period(since: datetime | None, until: datetime | None) -> payables.Period | JSONResponse:
        return refused_period(since, until) or payables.Period(since, until)

    @router.get("")
    async def by_seller(
        since: Since = None,
        until: Until = None,
        seller_id: Annotated[
            str | None, Query(min_length=1, max_length=64, description="only this seller"), NO_NUL
        ] = None,
    ) -> Any:
        """What each seller is owed for the orders whose payment was authorised (the ledger
        credited the seller) in the period, by seller id: ``orders``, of them
        ``owed_orders``/``owed_fen`` still owed and ``cancelled_orders``/``cancelled_fen``
        cancelled since (a refund after the sale, a void); and the totals of all of them
        (``orders``: an order of two sellers once, where each seller's counts it)."""
        asked = period(since, until)
        if isinstance(asked, JSONResponse):
            return asked
        async with uow.db.engine.connect() as conn:
            sellers, totals = await payables.by_seller(conn, asked, seller_id)
        return {"sellers": sellers, **totals}

    @router.get("/{seller_id}/orders")
    async def orders_of(
        seller_id: Id,
        since: Since = None,
        until: Until = None,
        start: Position | None = PAYABLES_CURSOR,
        limit: Limit = 20,
    ) -> Any:
        """The seller's payables of the period, the last owed first: ``order_id``,
        ``amount_fen``, ``status`` (``owed``, ``cancelled``), ``owed_at`` and
        ``cancelled_at`` (null: still owed); follow ``next_cursor``."""
        asked = period(since, until)
        if isinstance(asked, JSONResponse):
            return asked
        async with uow.db.engine.connect() as conn:
            items, next_cursor = await payables.orders_of(conn, seller_id, asked, start, limit)
        return {"items": _jsonable(items), "next_cursor": next_cursor}

    return router
