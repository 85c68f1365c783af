"""What each seller is owed (``GET /payables``) and a seller's orders (``GET
/payables/{seller}/orders``) read a period's payables from the ledger's credits of the
sellers in it, through indexes (payments migration 0026), not every payable and every
ledger entry of the season; read so, every figure is still the ledger's."""

import os
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import text

from caravan import system
from services.payments import payables
from tests.e2e.test_messaging_retention import orders_tables
from tests.e2e.test_payments_lists_plan import plans

ORDERS = int(os.environ.get("CARAVAN_TEST_PLAN_ORDERS", "50000"))
"""Orders, one a minute back from now (a season's 200,000: 139 days, to check a plan by
hand), paid by loan: each of one of 40 sellers, one in four of a second one too; one in 50
never owed (pending: no credit), one in 20 cancelled two hours later (the credit debited
back); the loan's receivable and interest beside the sellers' credits, and one in three
repaid a day later."""

FILL = """
insert into payments.payables (order_id, seller_id, amount_fen, status)
    select md5('o' || i)::uuid::text, 'seller-' || (i + 7 * k) % 40, 3000 * (2 - k),
        case when i % 50 = 1 then 'pending' when i % 20 = 0 then 'cancelled' else 'owed' end
    from generate_series(1, cast(:n as integer)) as i, generate_series(0, 1) as k
    where k = 0 or i % 4 = 0;
create temporary table placed on commit drop as
    select i, md5('o' || i)::uuid::text as order_id,
        cast(:now as timestamptz) - (:n - i) * interval '1 minute' as at
    from generate_series(1, cast(:n as integer)) as i where i % 50 <> 1;
create temporary table booked on commit drop as
    select o.i, o.order_id, o.at, 'seller_payable:' || p.seller_id as account,
        -p.amount_fen as amount_fen
    from placed o join payments.payables p using (order_id)
    union all
    select i, order_id, at, 'loan_receivable', case when i % 4 = 0 then 9300 else 6300 end
    from placed
    union all
    select i, order_id, at, 'interest_income', -300 from placed;
insert into payments.ledger_entries (txn_id, kind, account, amount_fen, order_id, created_at)
    select 'loan:' || order_id, 'loan_disbursed', account, amount_fen, order_id, at from booked
    union all
    select 'void:' || order_id, 'loan_voided', account, -amount_fen, order_id,
        at + interval '2 hours'
    from booked where i % 20 = 0
    union all
    select 'repaid:' || order_id, 'repayment', a, s * 6300, order_id, at + interval '1 day'
    from placed, (values ('repayments_cash', 1), ('loan_receivable', -1)) as r(a, s)
    where i % 3 = 0 and i % 20 <> 0;
analyze payments.payables
"""
SETTLED = "vacuum analyze payments.ledger_entries"  # as autovacuum leaves a ledger written

SUMS = """
select p.seller_id, count(*), count(*) filter (where p.status = 'owed'),
    coalesce(-sum(c.amount_fen) filter (where p.status = 'owed'), 0),
    count(*) filter (where p.status = 'cancelled'),
    coalesce(sum(d.amount_fen) filter (where p.status = 'cancelled'), 0)
from payments.ledger_entries c
join payments.payables p on c.account = 'seller_payable:' || p.seller_id
    and c.order_id = p.order_id
left join payments.ledger_entries d on d.account = c.account and d.order_id = c.order_id
    and d.amount_fen > 0
where c.amount_fen < 0 and c.created_at >= :since and c.created_at < :until
group by p.seller_id order by p.seller_id
"""
"""The ledger's: each seller's credits in the period, those of its payables still owed and
those debited back since."""

LISTED = """
select c.order_id, p.amount_fen, p.status, c.created_at, d.created_at
from payments.ledger_entries c
join payments.payables p on c.account = 'seller_payable:' || p.seller_id
    and c.order_id = p.order_id
left join payments.ledger_entries d on d.account = c.account and d.order_id = c.order_id
    and d.amount_fen > 0
where c.account = 'seller_payable:seller-7' and c.amount_fen < 0 and c.created_at >= :since
    and c.created_at < :until
order by c.created_at desc, c.order_id desc limit 20
"""
"""The ledger's: seller-7's newest 20 credits of the period, when each was debited back."""
PAYABLES = """
select count(*) from payments.ledger_entries
where amount_fen < 0 and account like :account and created_at >= :since
    and created_at < :until
"""
SUMMED = ("seller_id", "orders", "owed_orders", "owed_fen", "cancelled_orders", "cancelled_fen")


async def test_a_periods_payables_are_read_from_its_credits_through_indexes(
    infrastructure: system.Infrastructure,
) -> None:
    now = datetime.now(UTC)
    week = payables.Period(now - timedelta(days=14), now - timedelta(days=7))
    day = payables.Period(now - timedelta(days=8), now - timedelta(days=7))
    async with orders_tables(infrastructure, "payments") as db:
        async with db.transaction() as conn:
            for statement in FILL.split(";\n"):
                await conn.execute(text(statement), {"n": ORDERS, "now": now})
        async with db.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql(SETTLED)
            weeks, sellers = [
                await conn.scalar(text(PAYABLES), {"account": a, **asdict(week)})
                for a in ("seller_payable:%", "seller_payable:seller-7")
            ]
        # A few blocks a payable read, a week's of one seller or all (the credit's index entry,
        # the payable's key and row), whatever the season's size: every payable and ledger
        # entry of the season was 101,457 blocks at 200,000 orders, 139 days.
        found = await plans(
            db,
            {
                "a week's, every seller's": partial(payables.by_seller, period=week),
                "a day's, every seller's": partial(payables.by_seller, period=day),
            },
            most=5 * weeks,
        )
        found |= await plans(
            db,
            {
                "a week's, one seller's": partial(
                    payables.by_seller, period=week, seller_id="seller-7"
                ),
                "a week's orders of one seller": partial(
                    payables.orders_of, seller_id="seller-7", period=week, start=None, limit=20
                ),
            },
            most=8 * sellers,
        )
        async with db.engine.connect() as conn:
            ledgers = {
                name: [
                    dict(zip(SUMMED, row, strict=True))
                    for row in await conn.execute(
                        text(SUMS), {"since": period.since, "until": period.until}
                    )
                ]
                for name, period in (("week", week), ("day", day))
            }
            newest = (await conn.execute(text(LISTED), asdict(week))).all()
            distinct = PAYABLES.replace("count(*)", "count(distinct order_id)")
            ordered = await conn.scalar(
                text(distinct), {"account": "seller_payable:%", **asdict(week)}
            )
    every, totals = found["a week's, every seller's"]
    assert every == ledgers["week"] and len(every) == 40, every
    # An order of several sellers is each one's, and one order of the period's.
    assert totals["orders"] == ordered < sum(s["orders"] for s in every), (totals, ordered)
    assert totals["owed_fen"] == sum(s["owed_fen"] for s in every)
    assert sum(s["cancelled_orders"] for s in every) > 0
    assert found["a day's, every seller's"][0] == ledgers["day"]
    assert found["a week's, one seller's"][0] == [s for s in every if s["seller_id"] == "seller-7"]
    listed, next_cursor = found["a week's orders of one seller"]
    shown = ("order_id", "amount_fen", "status", "owed_at", "cancelled_at")
    assert [tuple(r[k] for k in shown) for r in listed] == [tuple(r) for r in newest]
    assert next_cursor is not None
    assert len(listed) == 20 and any(r["cancelled_at"] for r in listed)
    assert all((r["status"] == "cancelled") == (r["cancelled_at"] is not None) for r in listed)
