"""Instalments coming due: each (loan, instalment, stage) is announced once, as
``payment.instalment_due``, for the notifications service to remind the buyer.

Stages (see :func:`services.payments.domain.repayment.stage`): ``upcoming`` within
``CARAVAN_PAYMENTS_REMINDER_UPCOMING_DAYS`` days before the due date, ``today``, and
``overdue`` after it while unpaid. The stage a sweep finds is recorded in
``instalment_reminders`` (primary key loan, number, stage) in the same transaction as the
event's outbox row, so concurrent instances and repeated sweeps announce it exactly once.
A stage passed while no sweep ran is skipped (only the current one is announced).

An instalment announced overdue, and every instalment of a voided loan (``void_loan``), is
marked ``reminders_done``: nothing of it will be announced again, and the sweep's index
(``instalments_to_remind``) leaves it out, so that the sweep reads the instalments it may
still announce, not every one ever left unpaid.
"""

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Select, case, exists, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.payments.adapters.tables import (
    LOAN_ACTIVE,
    TO_REMIND,
    instalment_reminders,
    instalments,
    loans,
)
from services.payments.domain.repayment import Due, stage
from shared.events.payments import InstalmentDue
from shared.messaging.uow import Tx


def due_instalments(today: date, upcoming_days: int, limit: int) -> Select[Any]:
    """Unpaid instalments of active loans due within ``upcoming_days`` and not yet reminded
    of at their current stage (the index ``instalments_to_remind`` finds them). Those
    already reminded must not fill the page: with more than ``limit`` of them, the sweep
    found the same page every time and never reached the instalments after it.

    Locked, and those a repayment holds skipped (the next sweep finds them paid, or not): a
    sweep that read an instalment while a repayment of it committed announced it after the
    ``payment.repaid`` that paid it, and the buyer was reminded of what they had paid. Now a
    repayment waits for the sweep that read its instalments, and comes after it."""
    current = case(  # the stage of domain.repayment.stage, for a due date within the window
        (instalments.c.due < today, "overdue"),
        (instalments.c.due == today, "today"),
        else_="upcoming",
    )
    return (
        select(
            instalments.c.loan_id,
            instalments.c.number,
            instalments.c.due,
            instalments.c.amount_fen,
            instalments.c.interest_fen,
            instalments.c.paid_fen,
            loans.c.order_id,
            loans.c.buyer_id,
        )
        .join(loans, loans.c.loan_id == instalments.c.loan_id)
        .where(
            LOAN_ACTIVE,
            TO_REMIND,
            instalments.c.due <= today + timedelta(days=upcoming_days),
            ~exists().where(
                instalment_reminders.c.loan_id == instalments.c.loan_id,
                instalment_reminders.c.number == instalments.c.number,
                instalment_reminders.c.stage == current,
            ),
        )
        .order_by(instalments.c.due)
        .limit(limit)
        .with_for_update(of=instalments, skip_locked=True)
    )


async def announce_due(tx: Tx, today: date, upcoming_days: int, limit: int = 500) -> int:
    """One sweep; returns how many reminders were emitted."""
    rows = await tx.conn.execute(due_instalments(today, upcoming_days, limit))
    sent = 0
    done = []
    for r in rows.all():
        due = Due(r.number, r.due, r.amount_fen, r.interest_fen, r.paid_fen)
        now = stage(due, today, upcoming_days)
        if now is None:
            continue
        if now == "overdue":  # the last stage: recorded here, or by a sweep just before
            done.append((r.loan_id, r.number))
        fresh = (
            await tx.conn.execute(
                pg_insert(instalment_reminders)
                .values(loan_id=r.loan_id, number=r.number, stage=now)
                .on_conflict_do_nothing()
                .returning(instalment_reminders.c.loan_id)
            )
        ).first()
        if fresh is None:
            continue
        await tx.emit(
            InstalmentDue(
                order_id=r.order_id,
                loan_id=r.loan_id,
                buyer_id=r.buyer_id,
                number=r.number,
                due=r.due,
                amount_fen=due.remaining_fen,
                stage=now,
            )
        )
        sent += 1
    if done:  # locked by the sweep's read
        await tx.conn.execute(
            update(instalments)
            .where(tuple_(instalments.c.loan_id, instalments.c.number).in_(done))
            .values(reminders_done=True)
        )
    return sent
