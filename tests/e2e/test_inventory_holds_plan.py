"""The orders holding a lot (``GET /lots/{id}/holds``, ``caravan inventory holds``) are read
through an index of the reservation lines by lot, not by a scan of every order's lines: the
lines stay once their hold is sold or released, so the table grows with every order. Read
so, a lot's page is still its holds alone, the oldest first, and its totals all of them."""

import os
from datetime import UTC, datetime

from sqlalchemy import text

from caravan import system
from services.inventory.adapters import queries
from tests.e2e.test_messaging_retention import orders_tables
from tests.e2e.test_orders_list_plan import plan_of

ORDERS = int(os.environ.get("CARAVAN_TEST_PLAN_ORDERS", "50000"))
"""Orders holding or having held lots, one a minute back from now, each a line of one of
LOTS lots and one in four a second line of the next lot; the newest 40 still held, the others
sold but one in 30 released; those held of the first 5 lots (200,000 to check a plan by
hand)."""
LOTS = ORDERS // 100  # as a county's: 10,650 lots to a season's million orders

FILL = text(
    """
    insert into inventory.sellers (seller_id, name, county, phone)
        values ('plan-seller', 'plan', 'Shawan', '+8613900000000');
    insert into inventory.products (sku, seller_id, unit_price_fen, name)
        values ('PLAN-SKU', 'plan-seller', 100, '{"en": "plan"}');
    insert into inventory.lots (lot_id, sku, received, available, available_from, best_before)
        select 'LOT-' || i, 'PLAN-SKU', 1000000, 1000000, current_date, current_date + 30
        from generate_series(0, :lots - 1) as i;
    insert into inventory.reservations (order_id, status, created_at, updated_at, held_until)
        select md5(i::text)::uuid::text,
            case when i > :n - 40 then 'reserved' when i % 30 = 0 then 'released' else 'sold' end,
            at, at, at + interval '15 minutes'
        from generate_series(1, cast(:n as integer)) as i,
            lateral (select cast(:now as timestamptz) - (:n - i) * interval '1 minute' as at) t;
    insert into inventory.reservation_lines (order_id, lot_id, quantity)
        select md5(i::text)::uuid::text,
            'LOT-' || (i + k) % case when i > :n - 40 then 5 else :lots end, 1 + i % 3
        from generate_series(1, cast(:n as integer)) as i, generate_series(0, 1) as k
        where k = 0 or i % 4 = 0;
    """
)


async def test_a_lots_holds_are_read_through_an_index_of_its_lines(
    infrastructure: system.Infrastructure,
) -> None:
    async with orders_tables(infrastructure, "inventory") as db:
        async with db.transaction() as conn:
            for statement in str(FILL).split(";\n"):
                if statement.strip():
                    await conn.execute(
                        text(statement), {"n": ORDERS, "lots": LOTS, "now": datetime.now(UTC)}
                    )
            await conn.execute(text("analyze inventory.reservations"))
            await conn.execute(text("analyze inventory.reservation_lines"))
        lot = "LOT-3"  # held by 8 orders or more, and held and let go by many more
        async with db.engine.connect() as conn:
            held = """
                select l.order_id, l.quantity from inventory.reservation_lines l
                join inventory.reservations r using (order_id)
                where l.lot_id = :lot and r.status = 'reserved' order by r.created_at, l.order_id
            """
            expected = [tuple(r) for r in await conn.execute(text(held), {"lot": lot})]
            first, totals = await queries.lot_holds(conn, lot, limit=1)
            rest, _ = await queries.lot_holds(
                conn, lot, start=(first[0].held_at, first[0].order_id), limit=100
            )
            plans = {
                "a page": await plan_of(conn, queries.holding(lot, None, 100)),
                "a later page": await plan_of(
                    conn, queries.holding(lot, (first[0].held_at, first[0].order_id), 100)
                ),
                "the totals": await plan_of(conn, queries.held_totals(lot)),
            }
    assert len(expected) >= 2, expected
    assert [(h.order_id, h.quantity) for h in first + rest] == expected
    assert (totals.orders, totals.held) == (len(expected), sum(q for _, q in expected))
    for what, (nodes, blocks) in plans.items():
        assert not any(n.startswith("Seq Scan") for n in nodes), (what, nodes)
        assert blocks < 1000, (what, nodes, blocks)
