"""An operator's list of every buyer's orders (``GET /orders`` without ``buyer_id``, of a
status or of any, by reason, source and time placed, and its later pages) reads by an index
on a database of many orders, not by a scan of every order: a season's orders stay in the
table. Read so, its pages are still every order asked for, newest first, each once."""

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, TextClause, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from caravan import system
from services.orders.adapters.tables import orders
from services.orders.entrypoints import queries
from shared.db import Database
from shared.pagination import Position, decode_cursor
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


MIXED = text(
    """
    update orders.orders o set
        placed_at = case when n.i % 3 = 0 then date_trunc('hour', o.placed_at) else o.placed_at end,
        source = case when n.i % 4 = 0 then 'platform/shop' else 'http' end,
        status = case when n.i % 7 = 0 and o.reason is null then 'pending' else o.status end
    from (select order_id, cast(substr(order_ref, 5) as integer) as i from orders.orders) n
    where n.order_id = o.order_id
    """
)
"""FILL's orders, every third placed on its hour (ties between statuses and sources), one in
four a platform's, one in seven (not cancelled) pending."""


@asynccontextmanager
async def _filled(
    infrastructure: system.Infrastructure, n: int, now: datetime, *then: TextClause
) -> AsyncIterator[Database]:
    """The orders tables holding FILL's ``n`` orders up to ``now``, changed by ``then``."""
    async with orders_tables(infrastructure) as db:
        async with db.transaction() as conn:
            await conn.execute(FILL, {"n": n, "now": now})
            for statement in then:
                await conn.execute(statement)
            await conn.execute(text("analyze orders.orders"))
        yield db


def _nodes(node: dict[str, Any]) -> list[str]:
    """A plan's nodes: each one's type and, where it reads a table or an index, which."""
    name = node["Node Type"] + "".join(
        f" {node[k]}" for k in ("Relation Name", "Index Name") if k in node
    )
    return [name, *(n for child in node.get("Plans", []) for n in _nodes(child))]


async def plan_of(conn: AsyncConnection, statement: Select[Any]) -> tuple[list[str], int]:
    """The nodes of the plan of ``statement`` as run, and the buffers it read."""
    compiled = statement.compile(dialect=conn.dialect)
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    nodes, blocks, _ = await plan_of_sql(conn, str(compiled), params)
    return nodes, blocks


async def plan_of_sql(conn: AsyncConnection, sql: str, params: Any) -> tuple[list[str], int, float]:
    """The nodes of the plan of ``sql`` (with ``params``) as run, the buffers it read and
    the milliseconds it took."""
    explain = "explain (analyze, buffers, format json) " + sql
    [[plan]] = (await conn.exec_driver_sql(explain, params)).all()
    top = plan[0]["Plan"]
    blocks = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    return _nodes(top), blocks, plan[0]["Execution Time"]


def _listed(
    buyer_id: str | None = None, start: Position | None = None, **asked: Any
) -> Select[Any]:
    """``queries.listed``'s statement of a first page of 20, or of a later one (``start``)."""
    return queries.listed(buyer_id, start, 20, **asked)


async def test_every_buyers_orders_of_a_status_or_any_are_read_by_an_index(
    infrastructure: system.Infrastructure,
) -> None:
    now = datetime.now(UTC)
    async with _filled(infrastructure, ORDERS, now) as db:
        day = now - timedelta(days=1)
        async with db.engine.connect() as conn:
            asked: list[dict[str, Any]] = [
                {"placed": (day, None), "status": "cancelled", "reason": "out_of_stock"},
                {"status": "pending"},
                {
                    "placed": (day - timedelta(days=7), day - timedelta(days=6)),
                    "status": "cancelled",
                },
                {},
                {"source": "http"},
                {"placed": (day, None), "source": "http"},
                {"placed": (day - timedelta(days=7), day - timedelta(days=6))},
                {"start": (day - timedelta(days=5), "8")},  # a later page
                {
                    "start": (day - timedelta(days=5), "8"),
                    "placed": (day - timedelta(days=9), None),
                },
                {"buyer_id": "buyer-7"},  # a buyer's (orders_buyer) and a platform's order
                {"source": "http", "order_ref": f"REF-{ORDERS // 2}"},
            ]
            plans = [await plan_of(conn, _listed(**a)) for a in asked]
    for a, (nodes, blocks) in zip(asked, plans, strict=True):
        assert not any(n.startswith("Seq Scan") for n in nodes), (a, nodes)
        assert blocks < 100, (a, nodes, blocks)


async def _pages(
    conn: AsyncConnection,
    buyer_id: str | None = None,
    placed: tuple[datetime | None, datetime | None] = (None, None),
    **only: str,
) -> list[list[str]]:
    """The order ids of each page ``GET /orders`` so narrowed lists, 7 a page, following
    the cursor to the last."""
    pages, start = [], None
    while True:
        items, cursor = await queries.buyer_orders(conn, buyer_id, start, 7, placed, **only)
        pages.append([i.order_id for i in items])
        if cursor is None:
            return pages
        start = decode_cursor(cursor, (datetime, str))


def _newest_first(
    stored: Sequence[Row[Any]],
    placed: tuple[datetime | None, datetime | None] = (None, None),
    **only: str,
) -> list[str]:
    """The order ids of ``stored`` so narrowed, sorted here, newest first."""
    since, until = placed
    kept = [
        r
        for r in stored
        if all(getattr(r, k) == v for k, v in only.items())
        and (since is None or r.placed_at >= since)
        and (until is None or r.placed_at < until)
    ]
    return [r.order_id for r in sorted(kept, key=lambda r: (r.placed_at, r.order_id), reverse=True)]


async def test_every_buyers_orders_pages_are_the_orders_asked_for_newest_first(
    infrastructure: system.Infrastructure,
) -> None:
    now = datetime.now(UTC)
    async with _filled(infrastructure, 3000, now, MIXED) as db:
        day = now - timedelta(days=1)
        asked: list[dict[str, Any]] = [
            {},
            {"source": "platform/shop"},
            {"placed": (day, None)},
            {"placed": (day - timedelta(hours=5), day), "source": "http"},
            {"status": "pending"},
            {"status": "cancelled", "reason": "expired"},
            {"buyer_id": "buyer-5"},
        ]
        async with db.engine.connect() as conn:
            stored = (await conn.execute(select(orders))).all()
            found = [await _pages(conn, **a) for a in asked]
    for a, pages in zip(asked, found, strict=True):
        expected = _newest_first(stored, **a)
        assert [i for p in pages for i in p] == expected, a
        assert len(pages) == -(-len(expected) // 7) > 1, (a, len(pages), len(expected))
