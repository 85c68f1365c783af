"""The loan book (``GET /loans``, its overdue loans too) and the repayments of a period
(``GET /repayments``) read a season's loans and repayments through indexes (payments
migration 0025; 0027 and the reminder sweep's for the overdue loans: the instalments past
their day unpaid), not by a scan of every one: the tables keep every loan and repayment, and
grow with every microloan order. Read so, each page and each total is still what it was."""

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from caravan import system
from services.payments import lending
from shared.db import Database
from shared.pagination import encode_cursor
from tests.e2e.test_messaging_retention import orders_tables
from tests.e2e.test_orders_list_plan import plan_of_sql
from tests.e2e.test_payments_claims import ran_on

LOANS = int(os.environ.get("CARAVAN_TEST_PLAN_LOANS", "50000"))
"""Loans, one a minute back from now (a season's 200,000: 139 days, to check a plan by hand),
three instalments each: one loan in three repaid, one in 30 voided (its instalments left
unpaid, no longer reminded and marked voided, as a void leaves them), the active loans of one
buyer in seven with their first instalment unpaid (overdue after 30 days; a week after,
announced overdue: no longer reminded either); a repayment for each repaid loan."""

FILL = """
insert into payments.loans (loan_id, order_id, buyer_id, principal_fen, outstanding_fen,
    term_months, status, created_at)
    select md5('l' || i)::uuid::text, md5('o' || i)::uuid::text, 'buyer-' || i % 3000, 9000,
        case when i % 3 = 0 or i % 30 = 0 then 0 else 9000 end, 3,
        case when i % 30 = 0 then 'voided' when i % 3 = 0 then 'repaid' else 'active' end, at
    from generate_series(1, cast(:n as integer)) as i,
        lateral (select cast(:now as timestamptz) - (:n - i) * interval '1 minute' as at) t;
insert into payments.instalments (loan_id, number, due, amount_fen, paid_fen)
    select l.loan_id, k, (l.created_at + k * interval '30 days')::date, 3000,
        case when l.status = 'voided' then 0
            when l.status = 'repaid' or k > 1
            or cast(substr(l.buyer_id, 7) as integer) % 7 <> 0 then 3000 else 0 end
    from payments.loans l, generate_series(1, 3) as k;
update payments.instalments i set reminders_done = true, voided = l.status = 'voided'
    from payments.loans l
    where l.loan_id = i.loan_id and (l.status = 'voided'
        or (i.paid_fen < i.amount_fen and i.due < cast(:now as date) - 7));
insert into payments.repayments (loan_id, idempotency_key, amount_fen, principal_fen,
    interest_fen, created_at)
    select loan_id, 'repaid-' || loan_id, 9000, 9000, 0, created_at + interval '1 hour'
    from payments.loans where status = 'repaid';
analyze payments.loans;
analyze payments.instalments;
analyze payments.repayments
"""


def md5(said: str) -> str:
    return hashlib.md5(said.encode()).hexdigest()


@asynccontextmanager
async def filled(
    infrastructure: system.Infrastructure, schema: str, fill: str, **params: Any
) -> AsyncIterator[Database]:
    """``schema``'s tables, migrated in a database of their own, filled by ``fill``'s
    statements (``;`` at a line's end between them) with ``params``."""
    async with orders_tables(infrastructure, schema) as db:
        async with db.transaction() as conn:
            for statement in fill.split(";\n"):
                await conn.execute(text(statement), params)
        yield db


async def plans(
    db: Database, asked: dict[str, Callable[[AsyncConnection], Awaitable[Any]]], most: int = 2500
) -> Any:
    """Each of ``asked``'s reads, run, and each statement it ran explained: read by index, under
    ``most`` blocks (a page's, or a period's); what each read returned."""
    found, scans = {}, []
    async with db.engine.connect() as conn:
        for what, read in asked.items():
            with ran_on(db.engine) as ran:
                found[what] = await read(conn)
            for n, (sql, params) in enumerate(ran.sent):
                nodes, blocks, ms = await plan_of_sql(conn, sql, params)
                print(f"{what} ({n}): {ms:.1f} ms, {blocks} blocks, {nodes}")
                if any(n.startswith("Seq Scan") for n in nodes) or blocks >= most:
                    scans.append((what, n, blocks, nodes))
    assert not scans, scans
    return found


async def test_the_loan_book_and_the_repayments_are_read_through_indexes(
    infrastructure: system.Infrastructure,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    since, until = now - timedelta(days=8), now - timedelta(days=7)  # a day, a week back
    book = partial(lending.loan_book, today=today, overdue_only=False, limit=20)
    twentieth = (now - timedelta(minutes=19), str(uuid.UUID(md5(f"l{LOANS - 19}"))))
    async with filled(infrastructure, "payments", FILL, n=LOANS, now=now) as db:
        found = await plans(
            db,
            {
                "a page of loans": partial(book, buyer_id=None, status=None, start=None),
                "a later page": partial(book, buyer_id=None, status=None, start=twentieth),
                "voided loans": partial(book, buyer_id=None, status="voided", start=None),
                "a buyer's": partial(book, buyer_id="buyer-7", status=None, start=None),
                "a day's repayments": partial(
                    lending.repayments_made,
                    buyer_id=None,
                    since=since,
                    until=until,
                    start=None,
                    limit=20,
                ),
            },
        )
        async with db.engine.connect() as conn:
            voided_late = await conn.scalar(
                text(
                    "select count(*) from payments.instalments i join payments.loans l"
                    " using (loan_id) where l.status = 'voided' and i.due < :today"
                ),
                {"today": today},
            )
            overdue = (
                await conn.execute(
                    text(
                        "select l.loan_id, min(i.due) from payments.loans l"
                        " join payments.instalments i using (loan_id) where l.status = 'active'"
                        " and i.due < :today and i.paid_fen < i.amount_fen"
                        " group by l.loan_id order by min(i.due), l.loan_id limit 40"
                    ),
                    {"today": today},
                )
            ).all()
        # A page of what is overdue is read, the longest overdue first: the instalments past
        # their day unpaid by their day, each one's first unpaid by key and its loan by key,
        # a page and one more from each of the two indexes, 8-11 blocks an instalment (at
        # 50,000 loans and 200,000: 171 and 444 blocks). Not the book, nor every loan overdue
        # (by day alone, the sweep's index was sorted a day at a time: 2,325), nor the
        # instalments of the voided loans between them (0027's index held them, only the loan
        # saying it was voided: 1,808 blocks for the first page, of 217 such instalments at
        # 50,000 loans; 0029 leaves them out of it).
        assert voided_late > 0
        overdue_only = partial(book, buyer_id=None, status=None, overdue_only=True)
        after_20th = (datetime.combine(overdue[19][1], time(), UTC), overdue[19][0])
        found |= await plans(
            db,
            {
                "overdue loans": partial(overdue_only, start=None),
                "a later page of them": partial(overdue_only, start=after_20th),
            },
            most=12 * 2 * 21,
        )
        async with db.engine.connect() as conn:
            expected = await conn.execute(
                text(
                    "select count(*), sum(amount_fen) from payments.repayments"
                    " where created_at >= :since and created_at < :until"
                ),
                {"since": since, "until": until},
            )
    first = found["a page of loans"]
    assert [line.created_at for line in first[0]] == [now - timedelta(minutes=m) for m in range(20)]
    assert [line.created_at for line in found["a later page"][0]] == [
        now - timedelta(minutes=m) for m in range(20, 40)
    ]
    voided = found["voided loans"][0]
    assert len(voided) == 20 and {line.status for line in voided} == {"voided"}
    assert len(found["a buyer's"][0]) > 0 and {line.buyer_id for line in found["a buyer's"][0]} == {
        "buyer-7"
    }
    late, next_cursor = found["overdue loans"]
    later = found["a later page of them"][0]
    assert [(line.loan_id, line.overdue_since) for line in late + later] == overdue
    assert len(overdue) == 40 and next_cursor == encode_cursor(after_20th)
    assert all(line.overdue_fen == 3000 and line.next_due == line.overdue_since for line in late)
    assert [line.days_overdue for line in late] == [(today - d).days for _, d in overdue[:20]]
    assert late[0].days_overdue > 0
    made, _, totals = found["a day's repayments"]
    count, amount = expected.one()
    assert (totals["repayments"], totals["amount_fen"]) == (count, amount) and count > 0
    assert len(made) == 20 and all(since <= r.created_at < until for r in made)
