"""Use cases of the payments admin API: credit lines (set, adjust, read), repayments of
microloans (partial, full, early; idempotent by key) and reading a loan with its schedule.

Every change runs in one transaction under a row lock (the credit line, or the loan), so
concurrent calls on any number of instances are applied one after the other.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    exists,
    func,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payments.adapters import ledger as ledger_store
from services.payments.adapters.tables import (
    LEFT_UNPAID,
    LOAN_ACTIVE,
    TO_REMIND,
    credit_adjustments,
    credit_lines,
    instalments,
    loans,
    repayments,
)
from services.payments.domain import ledger
from services.payments.domain.credit import available_credit
from services.payments.domain.repayment import Due, allocate, overdue, remaining
from shared.events.payments import InstalmentLeft, PaymentRepaid
from shared.messaging.uow import Tx
from shared.pagination import Position, Value, newest_first, page
from shared.seed import MAX_CREDIT_LIMIT_FEN


class NotFound(LookupError):
    pass


class Conflict(Exception):
    """The request contradicts the current state (or an earlier request with its key)."""


@dataclass(frozen=True)
class CreditLine:
    buyer_id: str
    credit_limit_fen: int
    outstanding_fen: int
    available_fen: int


async def _outstanding(conn: AsyncConnection, buyer_id: str) -> int:
    value = await conn.scalar(
        select(func.coalesce(func.sum(loans.c.outstanding_fen), 0)).where(
            loans.c.buyer_id == buyer_id, LOAN_ACTIVE
        )
    )
    return int(value or 0)


async def credit_line(conn: AsyncConnection, buyer_id: str) -> CreditLine:
    limit = await conn.scalar(
        select(credit_lines.c.credit_limit_fen).where(credit_lines.c.buyer_id == buyer_id)
    )
    if limit is None:
        raise NotFound(f"no credit line for buyer {buyer_id}")
    outstanding = await _outstanding(conn, buyer_id)
    return CreditLine(buyer_id, limit, outstanding, available_credit(limit, outstanding))


async def set_credit_limit(
    tx: Tx, buyer_id: str, limit_fen: int
) -> tuple[CreditLine | None, CreditLine]:
    """Create the buyer's credit line or set its limit: the line before (None: there was
    none) and after. The line is created, or else locked, before it is read: of concurrent
    calls, each finds the line the one before it left (the audit trail's *before*; a lock
    on a row that does not exist yet locks nothing)."""
    created = await tx.conn.scalar(
        pg_insert(credit_lines)
        .values(buyer_id=buyer_id, credit_limit_fen=limit_fen)
        .on_conflict_do_nothing(index_elements=["buyer_id"])
        .returning(credit_lines.c.buyer_id)
    )
    if created is not None:
        return None, await credit_line(tx.conn, buyer_id)
    await lock_credit_line(tx, buyer_id)
    before = await credit_line(tx.conn, buyer_id)
    if before.credit_limit_fen != limit_fen:
        await tx.conn.execute(
            update(credit_lines)
            .where(credit_lines.c.buyer_id == buyer_id)
            .values(credit_limit_fen=limit_fen, updated_at=func.now())
        )
    return before, await credit_line(tx.conn, buyer_id)


async def lock_credit_line(tx: Tx, buyer_id: str) -> None:
    """Lock a credit line for a change in this transaction: what is read of it from now on
    (the audit trail's *before*) is what the change starts from."""
    await tx.conn.execute(
        select(credit_lines.c.buyer_id).where(credit_lines.c.buyer_id == buyer_id).with_for_update()
    )


async def lock_loan(tx: Tx, loan_id: str) -> None:
    """Lock a loan for a repayment in this transaction (the audit trail's *before*)."""
    mine = select(loans.c.loan_id).where(loans.c.loan_id == loan_id).with_for_update()
    await tx.conn.execute(mine)


async def adjust_credit_limit(
    tx: Tx, buyer_id: str, delta_fen: int, key: str | None = None
) -> tuple[CreditLine, bool]:
    """Raise or lower the limit by ``delta_fen``; never below zero nor above
    :data:`~shared.seed.MAX_CREDIT_LIMIT_FEN`. With ``key`` (an
    idempotency key) an adjustment is applied once: the same key again changes nothing (and
    says so), the same key with another delta is a :class:`Conflict`. The line and whether
    this call applied it."""
    limit = await tx.conn.scalar(
        select(credit_lines.c.credit_limit_fen)
        .where(credit_lines.c.buyer_id == buyer_id)
        .with_for_update()  # also serialises two calls with one key
    )
    if limit is None:
        raise NotFound(f"no credit line for buyer {buyer_id}")
    if key is not None:
        earlier = await tx.conn.scalar(
            select(credit_adjustments.c.delta_fen).where(
                credit_adjustments.c.buyer_id == buyer_id,
                credit_adjustments.c.idempotency_key == key,
            )
        )
        if earlier is not None:
            if earlier != delta_fen:
                raise Conflict(f"Idempotency-Key {key} was used for an adjustment of {earlier} fen")
            return await credit_line(tx.conn, buyer_id), False
    if limit + delta_fen < 0:
        raise Conflict(
            f"the limit of {limit} fen cannot be lowered by {-delta_fen} fen: a credit limit is"
            f" at least 0, so lowered by {limit} fen at most"
        )
    if delta_fen > 0 and limit + delta_fen > MAX_CREDIT_LIMIT_FEN:  # lowering one set before: fine
        raise Conflict(
            f"the limit of {limit} fen cannot be raised by {delta_fen} fen: a credit limit is "
            f"at most {MAX_CREDIT_LIMIT_FEN} fen"
        )
    await tx.conn.execute(
        update(credit_lines)
        .where(credit_lines.c.buyer_id == buyer_id)
        .values(credit_limit_fen=limit + delta_fen, updated_at=func.now())
    )
    if key is not None:
        await tx.conn.execute(
            credit_adjustments.insert().values(
                buyer_id=buyer_id, idempotency_key=key, delta_fen=delta_fen
            )
        )
    return await credit_line(tx.conn, buyer_id), True


@dataclass(frozen=True)
class InstalmentView:
    number: int
    due: date
    amount_fen: int
    interest_fen: int
    paid_fen: int
    overdue: bool


@dataclass(frozen=True)
class LoanView:
    loan_id: str
    order_id: str
    buyer_id: str
    status: str
    principal_fen: int
    interest_fen: int
    term_months: int
    outstanding_fen: int  # principal still owed (what counts against the credit line)
    remaining_fen: int  # principal and interest still to pay
    overdue_fen: int
    refund_owed_fen: int  # repaid on a loan since voided, owed back to the buyer
    schedule: list[InstalmentView]


async def _dues(conn: AsyncConnection, loan_id: str) -> list[Due]:
    rows = await conn.execute(
        select(instalments).where(instalments.c.loan_id == loan_id).order_by(instalments.c.number)
    )
    return [Due(r.number, r.due, r.amount_fen, r.interest_fen, r.paid_fen) for r in rows]


def _owed(dues: list[Due], today: date) -> tuple[int, int]:
    """What is left to pay on a loan's instalments (those of a loan still lent), and what of
    it is overdue ``today``."""
    return remaining(dues), sum(d.remaining_fen for d in dues if overdue(d, today))


async def loan_view(conn: AsyncConnection, loan_id: str, today: date) -> LoanView:
    loan = (await conn.execute(select(loans).where(loans.c.loan_id == loan_id))).first()
    if loan is None:
        raise NotFound(f"no loan {loan_id}")
    dues = await _dues(conn, loan_id)
    live = loan.status == "active"
    left, late = _owed(dues if live else [], today)
    # A liability, so credited (negative) while it is owed.
    refund = -await ledger_store.balance_of_loan(conn, loan_id, ledger.BUYER_REFUND_PAYABLE)
    return LoanView(
        loan_id=loan.loan_id,
        order_id=loan.order_id,
        buyer_id=loan.buyer_id,
        status=loan.status,
        principal_fen=loan.principal_fen,
        interest_fen=loan.interest_fen,
        term_months=loan.term_months,
        outstanding_fen=loan.outstanding_fen,
        remaining_fen=left,
        overdue_fen=late,
        refund_owed_fen=refund,
        schedule=[
            InstalmentView(
                d.number,
                d.due,
                d.amount_fen,
                d.interest_fen,
                d.paid_fen,
                live and overdue(d, today),
            )
            for d in dues
        ],
    )


LoanStatus = Literal["active", "repaid", "voided"]


@dataclass(frozen=True)
class LoanLine:
    """A loan as the loan book lists it: :class:`LoanView`'s figures without its schedule,
    the day of its next instalment not paid in full (None: none is left to pay), and since
    when it is overdue."""

    loan_id: str
    order_id: str
    buyer_id: str
    status: str
    created_at: datetime
    principal_fen: int
    interest_fen: int
    term_months: int
    outstanding_fen: int
    remaining_fen: int
    overdue_fen: int
    next_due: date | None
    overdue_since: date | None  # the day of its oldest instalment overdue (None: none is)
    days_overdue: int  # since that day, in the market's days (0: none is overdue)
    repaid_fen: int  # what its buyer repaid on it, interest too (a voided loan's: before it)
    refund_owed_fen: int  # of that, owed back to the buyer (a voided loan's, until refunded)


_LISTED = (
    "loan_id",
    "order_id",
    "buyer_id",
    "status",
    "created_at",
    "principal_fen",
    "interest_fen",
    "term_months",
    "outstanding_fen",
)
"""The columns of a loan the loan book gives as they are (:class:`LoanLine`)."""


def _overdue_loans(
    today: date, chosen: list[ColumnElement[bool]], start: Position | None, limit: int
) -> Select[Any]:
    """The active loans (of those ``chosen``) with an instalment past its day and not paid in
    full, the longest overdue first (by the day of the oldest such instalment, then by id),
    strictly after ``start``: ``limit`` of them and one more. Read from those instalments by
    their day (``instalments_to_remind``: not announced overdue yet;
    ``instalments_left_unpaid``: announced; neither holds a voided loan's), each one kept if
    it is its loan's first unpaid (a probe of the loan's instalments by key) and its loan then
    read by its key (a lateral read of one row): a page reads a page's instalments, and the
    later unpaid ones of the loans listed between them, whatever the book's size, how many are
    overdue or how many loans were voided."""
    before = instalments.alias("before")
    first = ~exists().where(
        before.c.loan_id == instalments.c.loan_id,
        before.c.number < instalments.c.number,
        before.c.paid_fen < before.c.amount_fen,
    )
    one = (
        select(loans)
        .where(loans.c.loan_id == instalments.c.loan_id, LOAN_ACTIVE, *chosen)
        .limit(1)
        .lateral("loan")
    )
    key = (instalments.c.due, instalments.c.loan_id)
    past = [instalments.c.due < today, first]
    if start is not None:
        past.append(tuple_(*key) > tuple_(_day(start[0]), start[1]))
    # Each index walked in the page's order (by day, then loan: 0028) in a statement of its
    # own with the page's limit: one union of both, ordered, was read whole and sorted (a
    # bitmap of every instalment overdue).
    walks = [
        select(one, instalments.c.due.label("overdue_since"))
        .select_from(instalments.join(one, true()))
        .where(which, *past)
        .order_by(*key)
        .limit(limit + 1)
        for which in (TO_REMIND, LEFT_UNPAID)
    ]
    both = union_all(*walks).subquery("overdue")
    return select(both).order_by(both.c.overdue_since, both.c.loan_id).limit(limit + 1)


def _day(at: Value) -> date:
    """The day an overdue page's cursor names, given as its midnight (UTC): a cursor's values
    are times and text (:mod:`shared.pagination`)."""
    assert isinstance(at, datetime)
    return at.date()


def _days_overdue(dues: list[Due], today: date) -> tuple[date | None, int]:
    """The day of a loan's oldest instalment overdue ``today`` (None: none), and how many
    days ago that was: 1 the day after it fell due, as the market's calendar counts."""
    since = min((d.due for d in dues if overdue(d, today)), default=None)
    return since, (today - since).days if since is not None else 0


async def loan_book(
    conn: AsyncConnection,
    today: date,
    *,
    buyer_id: str | None,
    status: LoanStatus | None,
    overdue_only: bool,
    start: Position | None,
    limit: int,
) -> tuple[list[LoanLine], str | None]:
    """The loans of a buyer, of a status, the newest first, or only those overdue (an active
    loan with an instalment past its day unpaid), the longest overdue first; strictly after
    ``start``: up to ``limit`` of them, each with what it owes and what is overdue ``today``,
    since when, and the cursor to continue from if there are more."""
    chosen = []
    if buyer_id is not None:
        chosen.append(loans.c.buyer_id == buyer_id)
    if status is not None:
        chosen.append(loans.c.status == status)
    if overdue_only:
        found = (await conn.execute(_overdue_loans(today, chosen, start, limit))).all()
        rows, next_cursor = page(
            found, limit, lambda r: (datetime.combine(r.overdue_since, time(), UTC), r.loan_id)
        )
    else:
        query = select(loans).where(*chosen)
        key = (loans.c.created_at, loans.c.loan_id)
        found = (await conn.execute(newest_first(query, key, start, limit))).all()
        rows, next_cursor = page(found, limit, lambda r: (r.created_at, r.loan_id))
    dues: dict[str, list[Due]] = {r.loan_id: [] for r in rows}
    if rows:
        schedule = await conn.execute(
            select(instalments)
            .where(instalments.c.loan_id.in_(list(dues)))
            .order_by(instalments.c.loan_id, instalments.c.number)
        )
        for i in schedule:
            dues[i.loan_id].append(Due(i.number, i.due, i.amount_fen, i.interest_fen, i.paid_fen))
    repaid = {loan_id: sum(d.paid_fen for d in schedule) for loan_id, schedule in dues.items()}
    # What a voided loan's buyer had repaid is owed back to them until refunded by hand: the
    # ledger's, as GET /loans/{id} says it (a liability, so credited, negative, while owed).
    owing = [r.loan_id for r in rows if r.status == "voided" and repaid[r.loan_id]]
    owed = await ledger_store.balances_of_loans(conn, owing, ledger.BUYER_REFUND_PAYABLE)
    lines = []
    for r in rows:
        mine = dues[r.loan_id] if r.status == "active" else []
        left, late = _owed(mine, today)
        since, days = _days_overdue(mine, today)
        lines.append(
            LoanLine(
                **{name: r._mapping[name] for name in _LISTED},
                remaining_fen=left,
                overdue_fen=late,
                next_due=min((d.due for d in mine if d.remaining_fen > 0), default=None),
                overdue_since=since,
                days_overdue=days,
                repaid_fen=repaid[r.loan_id],
                refund_owed_fen=-owed.get(r.loan_id, 0),
            )
        )
    return lines, next_cursor


@dataclass(frozen=True)
class RepaymentLine:
    """A repayment as the list of those made says it: when, on which loan, of whose order,
    and how it was split between principal and interest."""

    repayment_id: str  # its idempotency key, as POST /loans/{id}/repayments answered it
    loan_id: str
    order_id: str
    buyer_id: str
    created_at: datetime
    amount_fen: int
    principal_fen: int
    interest_fen: int
    loan_status: str  # the loan's now: "voided", what was repaid is owed back to the buyer


async def repayments_made(
    conn: AsyncConnection,
    *,
    buyer_id: str | None,
    since: datetime | None,
    until: datetime | None,
    start: Position | None,
    limit: int,
) -> tuple[list[RepaymentLine], str | None, dict[str, int]]:
    """The repayments recorded at or after ``since`` and before ``until`` (of a buyer's
    loans), the newest first, strictly after ``start``: up to ``limit`` of them, the cursor
    to continue from if there are more, and the totals of all of them (every page's)."""
    chosen = []
    if buyer_id is not None:
        chosen.append(loans.c.buyer_id == buyer_id)
    if since is not None:
        chosen.append(repayments.c.created_at >= since)
    if until is not None:
        chosen.append(repayments.c.created_at < until)
    joined = repayments.join(loans, loans.c.loan_id == repayments.c.loan_id)
    query = (
        select(
            repayments.c.idempotency_key.label("repayment_id"),
            repayments.c.loan_id,
            loans.c.order_id,
            loans.c.buyer_id,
            repayments.c.created_at,
            repayments.c.amount_fen,
            repayments.c.principal_fen,
            repayments.c.interest_fen,
            loans.c.status.label("loan_status"),
        )
        .select_from(joined)
        .where(*chosen)
    )
    key = (repayments.c.created_at, repayments.c.loan_id, repayments.c.idempotency_key)
    found = (await conn.execute(newest_first(query, key, start, limit))).all()
    rows, next_cursor = page(found, limit, lambda r: (r.created_at, r.loan_id, r.repayment_id))
    sums = (
        await conn.execute(
            select(
                func.count(),
                *(
                    func.coalesce(func.sum(column), 0)
                    for column in (
                        repayments.c.amount_fen,
                        repayments.c.principal_fen,
                        repayments.c.interest_fen,
                    )
                ),
            )
            .select_from(joined if buyer_id is not None else repayments)
            .where(*chosen)
        )
    ).one()
    totals = dict(
        zip(
            ("repayments", "amount_fen", "principal_fen", "interest_fen"),
            map(int, sums),
            strict=True,
        )
    )
    return [RepaymentLine(**r._mapping) for r in rows], next_cursor, totals


@dataclass(frozen=True)
class Repayment:
    repayment_id: str
    loan_id: str
    amount_fen: int
    principal_fen: int
    interest_fen: int
    allocations: list[dict[str, int]]
    loan: LoanView
    created: bool


async def repay(tx: Tx, loan_id: str, key: str, amount_fen: int | None, today: date) -> Repayment:
    """Record a repayment of ``amount_fen`` (``None``: whatever remains, in full) under the
    idempotency ``key``: the same key again returns the first result and changes nothing.
    Raises ``NotFound``, ``Conflict`` (loan not active, key reused for another amount) or
    ``Overpayment`` (more than remains)."""
    loan = (
        await tx.conn.execute(select(loans).where(loans.c.loan_id == loan_id).with_for_update())
    ).first()
    if loan is None:
        raise NotFound(f"no loan {loan_id}")
    earlier = (
        await tx.conn.execute(
            select(repayments).where(
                repayments.c.loan_id == loan_id, repayments.c.idempotency_key == key
            )
        )
    ).first()
    if earlier is not None:
        if earlier.requested_fen != amount_fen:
            raise Conflict(f"key {key!r} was used for another repayment of this loan")
        return Repayment(
            key,
            loan_id,
            earlier.amount_fen,
            earlier.principal_fen,
            earlier.interest_fen,
            earlier.allocations or [],  # none kept by repayments made before 0008
            await loan_view(tx.conn, loan_id, today),
            created=False,
        )
    if loan.status != "active":
        raise Conflict(f"loan {loan_id} is {loan.status}")
    dues = await _dues(tx.conn, loan_id)
    amount = remaining(dues) if amount_fen is None else amount_fen
    applied = allocate(dues, amount)
    for part in applied:
        await tx.conn.execute(
            update(instalments)
            .where(instalments.c.loan_id == loan_id, instalments.c.number == part.number)
            .values(paid_fen=instalments.c.paid_fen + part.amount_fen)
        )
    principal = sum(a.principal_fen for a in applied)
    interest = sum(a.interest_fen for a in applied)
    allocations = [
        {
            "number": a.number,
            "amount_fen": a.amount_fen,
            "interest_fen": a.interest_fen,
            "principal_fen": a.principal_fen,
        }
        for a in applied
    ]
    left = remaining(dues) - amount
    owed = {due.number: due.remaining_fen for due in dues}
    settled = [part.number for part in applied if part.amount_fen >= owed[part.number]]
    await tx.conn.execute(
        update(loans)
        .where(loans.c.loan_id == loan_id)
        .values(
            outstanding_fen=loans.c.outstanding_fen - principal,
            status="repaid" if left == 0 else "active",
        )
    )
    await tx.conn.execute(
        repayments.insert().values(
            loan_id=loan_id,
            idempotency_key=key,
            requested_fen=amount_fen,
            amount_fen=amount,
            principal_fen=principal,
            interest_fen=interest,
            allocations=allocations,
        )
    )
    ledger_store.post(
        tx,
        f"repay:{loan_id}:{key}",
        "repaid",
        ledger.repaid(principal, interest),
        order_id=loan.order_id,
        loan_id=loan_id,
    )
    view = await loan_view(tx.conn, loan_id, today)
    await tx.emit(
        PaymentRepaid(
            order_id=loan.order_id,
            loan_id=loan_id,
            buyer_id=loan.buyer_id,
            repayment_id=key,
            amount_fen=amount,
            principal_fen=principal,
            interest_fen=interest,
            outstanding_fen=view.outstanding_fen,
            remaining_fen=view.remaining_fen,
            fully_repaid=left == 0,
            settled_instalments=settled,
            instalments_left=[
                InstalmentLeft(
                    number=part.number, remaining_fen=owed[part.number] - part.amount_fen
                )
                for part in applied
            ],
        )
    )
    return Repayment(
        key,
        loan_id,
        amount,
        principal,
        interest,
        allocations,
        view,
        created=True,
    )
