"""An order's first update (its stock reserved: no indexed column changes) is a HOT update,
written beside the row on its own page, with no entry in any of the table's seven indexes:
orders migration 0014 leaves half of each page of ``orders.orders`` free (its fillfactor).
With every page filled to the brim, the new version went to another page, and each update
wrote an entry in every index (bench/HISTORY.md, session 57: 1.8 of an order's two updates),
whenever other transactions' snapshots kept the page's dead versions from being pruned, as
the services' always do under load."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from caravan import system
from shared.db.migrate import migrations_folder, upgrade
from tests.harness import scratch_database

LINES = json.dumps(
    [
        {"sku": f"SKU-{i:04d}", "quantity": 2, "seller_id": f"seller-{i:04d}", "name": "x" * 40}
        for i in range(5)
    ]
)  # about the size of a bench order's row (826 bytes on average)
INSERT = text(
    "insert into orders.orders (order_id, source, order_ref, request_hash, buyer_id, lines,"
    " payment_method, term_months, status, stock, payment, placed_at, deadline_at)"
    " select 'o-' || n, 'test', 'ref-' || n, repeat('h', 64), 'buyer-' || n,"
    " cast(:lines as jsonb), 'microloan', 3, 'pending', 'pending', 'pending', :at, :deadline"
    " from generate_series(1, :n) as n"
)
# What OrderRepository.save sets when an order's stock is reserved: no indexed column changes.
RESERVED = text(
    "update orders.orders set stock = 'reserved', total_fen = 1000, updated_at = now()"
    " where order_id = :order_id"
)
HOT = text("select pg_stat_get_xact_tuples_hot_updated('orders.orders'::regclass)")


async def test_an_orders_stock_reserved_is_a_hot_update(
    infrastructure: system.Infrastructure,
) -> None:
    async with scratch_database(infrastructure.database_url, "caravan_hot") as url:
        await asyncio.to_thread(upgrade, migrations_folder("orders"), url)
        engine = create_async_engine(url)
        try:
            now = datetime.now(UTC)
            n = 30  # a few pages' worth
            async with engine.begin() as conn:
                await conn.execute(
                    INSERT,
                    {"lines": LINES, "at": now, "deadline": now + timedelta(hours=1), "n": n},
                )
            hot = 0
            # Another transaction's snapshot, as the services' many transactions hold one at
            # any time: the versions the updates leave are not pruned until it ends, so a page
            # has only the room it was left for them.
            async with engine.connect() as other:
                await other.execution_options(isolation_level="REPEATABLE READ")
                await other.execute(text("select 1"))
                for i in range(1, n + 1):
                    async with engine.begin() as conn:  # each its own, as the steps are
                        before = await conn.scalar(HOT)  # the backend's, not yet reported
                        await conn.execute(RESERVED, {"order_id": f"o-{i}"})
                        hot += await conn.scalar(HOT) - before
        finally:
            await engine.dispose()
    assert hot == n, f"{hot} of {n} updates HOT"
