"""The payments owed back to their buyers (``void_refused``, a voided loan's repayments) and
those refunded by hand are counted for the alerts' gauges, and the payments of any status
listed for operators (``GET /payments?status=``, ``caravan payments list``), through an index
on a database of many payments, not by a scan of every payment: the table keeps every payment
ever made."""

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from caravan import system
from services.payments.prepaid import LoansOwedBack, listed, payments_by_status
from tests.e2e.test_messaging_retention import orders_tables
from tests.e2e.test_orders_list_plan import plan_of

PAYMENTS = int(os.environ.get("CARAVAN_TEST_PLAN_PAYMENTS", "20000"))
"""Payments in the table, one changed a minute back from now: one in 5,000 ``void_refused``
and one in 700 ``refunded``, a few in flight or awaiting a platform, one in 20 declined, one
in 25 voided, the others authorised (300,000 to check a plan by hand)."""

FILL = text(
    """
    insert into payments.payments (order_id, buyer_id, method, amount_fen, status,
        created_at, updated_at, next_attempt_at, refund_owed_fen, gateway_refusal,
        refund_reference, refunded_at)
    select md5(i::text)::uuid::text, 'buyer-' || i % 426, 'prepaid', 1000 + i % 9000, s.status,
        at, at, case when s.status in ('charging', 'voiding') then at end,
        case when s.status in ('void_refused', 'refunded') then 1000
            when s.status = 'voided' and i % 250 = 0 then 500 end,
        case when s.status in ('void_refused', 'refunded') then 'settled' end,
        case when s.status = 'refunded' then 'BANK-' || i end,
        case when s.status = 'refunded' then at end
    from generate_series(1, cast(:n as integer)) as i,
        lateral (select cast(:now as timestamptz) - (:n - i) * interval '1 minute' as at) t,
        lateral (select case
            when i > :n - 10 then 'charging'
            when i % 5000 = 7 then 'voiding'
            when i % 5000 = 11 then 'void_refused'
            when i % 700 = 13 then 'refunded'
            when i % 10000 = 17 then 'awaiting'
            when i % 20 = 0 then 'declined'
            when i % 25 = 0 then 'voided'
            else 'authorized' end as status) s
    """
)


async def test_payments_refunded_by_hand_are_counted_and_any_status_listed_through_an_index(
    infrastructure: system.Infrastructure,
) -> None:
    async with orders_tables(infrastructure, "payments") as db:
        async with db.transaction() as conn:
            await conn.execute(FILL, {"n": PAYMENTS, "now": datetime.now(UTC)})
            await conn.execute(text("analyze payments.payments"))
        async with db.engine.connect() as conn:
            first = (await conn.execute(listed("refunded", None, 5))).all()
            after = (first[4].updated_at, first[4].order_id)
            # A week's (caravan payments list --since --until): the index read from the
            # week's end down, in order, as the whole list's.
            week = (datetime.now(UTC) - timedelta(days=10), datetime.now(UTC) - timedelta(days=3))
            by_hand: dict[str, Any] = {
                "void_refused": listed("void_refused", None, 20),
                "refunded": listed("refunded", None, 5),
                "refunded after a page": listed("refunded", after, 5),
                "refunded of a week": listed("refunded", None, 5, *week),
            }
            # The statuses most payments end in (and those before any charge): a page read in
            # order from payments_status_changed, not every payment of the status sorted.
            by_status: dict[str, Any] = {
                status: listed(status, None, 20)
                for status in ("authorized", "declined", "voided", "pending", "cancelled")
            }
            later = (datetime.now(UTC) - timedelta(days=5), "8")
            by_status["declined after a page"] = listed("declined", later, 20)
            by_status["voided of a week"] = listed("voided", None, 20, *week)
            other: dict[str, Any] = {
                "charging": listed("charging", None, 20),
                "awaiting": listed("awaiting", None, 20),
                "the gauge": payments_by_status(db.engine).count_live(),
                "the loans owed back": LoansOwedBack(db.engine).counted(),
            }
            asked = by_hand | by_status | other
            plans = {what: await plan_of(conn, q) for what, q in asked.items()}
    for what, (nodes, blocks) in plans.items():
        assert not any(n.startswith("Seq Scan") for n in nodes), (what, nodes)
        assert blocks < 50, (what, nodes, blocks)
    nodes, _ = plans["the loans owed back"]  # a few among every payment: their own index
    assert any("payments_loans_owed_back" in n for n in nodes), nodes
    for lists, index in (
        (by_hand, "payments_refunds_by_hand"),
        (by_status, "payments_status_changed"),
    ):
        for what in lists:  # a page read in order from the index: nothing sorted
            nodes, _ = plans[what]
            assert any(index in n for n in nodes), (what, nodes)
            assert not any(n.startswith("Sort") for n in nodes), (what, nodes)
