"""An operator's list of every buyer's orders (``GET /orders`` without ``buyer_id``, by
status, reason and time placed) reads by an index on a database of many orders, not by a
scan of every order: a season's orders stay in the table."""

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from caravan import system
from services.orders.entrypoints import queries
from tests.e2e.test_messaging_retention import orders_tables

ORDERS = int(os.environ.get("CARAVAN_TEST_PLAN_ORDERS", "20000"))
"""Orders in the table, one a minute back from now: one in 50 cancelled, the newest 20
pending (100,000 to check a plan by hand)."""

FILL = text(
    """
    insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id, lines,
        payment_method, status, stock, payment, reason, placed_at, deadline_at)
    select md5(i::text)::uuid::text, 'http', 'REF-' || i, md5(i::text), 'buyer-' || i % 426,
        '[]', 'prepaid',
        case when i % 50 = 0 then 'cancelled' when i > :n - 20 then 'pending'
             else 'confirmed' end,
        'reserved', 'authorized',
        case when i % 50 = 0
             then (array['out_of_stock', 'expired', 'cancelled_by_buyer'])[i / 50 % 3 + 1] end,
        placed, placed
    from generate_series(1, cast(:n as integer)) as i,
        lateral (select cast(:now as timestamptz) - (:n - i) * interval '1 minute' as placed) p
    """
)


def _nodes(node: dict[str, Any]) -> list[str]:
    """A plan's nodes: each one's type and, where it reads a table or an index, which."""
    name = node["Node Type"] + "".join(
        f" {node[k]}" for k in ("Relation Name", "Index Name") if k in node
    )
    return [name, *(n for child in node.get("Plans", []) for n in _nodes(child))]


async def _plan(conn: AsyncConnection, **asked: Any) -> tuple[list[str], int]:
    """The nodes of the plan of ``queries.listed(**asked)`` as run, and the buffers it read."""
    compiled = queries.listed(None, None, 20, **asked).compile(dialect=conn.dialect)
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    explain = "explain (analyze, buffers, format json) " + str(compiled)
    [[plan]] = (await conn.exec_driver_sql(explain, params)).all()
    top = plan[0]["Plan"]
    return _nodes(top), top["Shared Hit Blocks"] + top["Shared Read Blocks"]


async def test_every_buyers_orders_by_status_and_time_are_read_by_an_index(
    infrastructure: system.Infrastructure,
) -> None:
    now = datetime.now(UTC)
    async with orders_tables(infrastructure) as db:
        async with db.transaction() as conn:
            await conn.execute(FILL, {"n": ORDERS, "now": now})
            await conn.execute(text("analyze orders.orders"))
        day = now - timedelta(days=1)
        async with db.engine.connect() as conn:
            asked: list[dict[str, Any]] = [
                {"placed": (day, None), "status": "cancelled", "reason": "out_of_stock"},
                {"status": "pending"},
                {
                    "placed": (day - timedelta(days=7), day - timedelta(days=6)),
                    "status": "cancelled",
                },
            ]
            plans = [await _plan(conn, **a) for a in asked]
    for a, (nodes, blocks) in zip(asked, plans, strict=True):
        assert not any(n.startswith("Seq Scan") for n in nodes), (a, nodes)
        assert blocks < 100, (a, nodes, blocks)
