"""Orders reads an order's end back from its outbox to publish it again (inventory still held
the order's stock after it ended: services/orders/handlers.py, ``_publish_end_again``). On a
database of its own, with an outbox of thousands of other rows, the end is found by the
outbox's primary key around when the order's timeline says it was written: no scan of the
outbox, which holds a day of every order's events."""

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import insert, text

from caravan import system
from services.orders.adapters.repository import Emitted, OrderRepository
from services.orders.adapters.tables import inbox, outbox, timeline
from shared.db import Database
from shared.messaging.uow import Tx, UnitOfWork
from shared.topics import EventType, Topic
from tests.e2e.test_messaging_retention import orders_tables

AROUND = 3000  # other orders' rows on each side of the end, one every 0.2 s
STEP = timedelta(seconds=0.2)


def _row(order_id: str, kind: str, at: datetime) -> dict[str, Any]:
    value = orjson.dumps({"type": kind, "data": {"order_id": order_id}})
    return {
        "topic": Topic.ORDER_EVENTS.value,
        "key": order_id.encode(),
        "value": value,
        "created_at": at,
        "sent_at": at + STEP / 2,
    }


async def _outbox_reads(db: Database) -> tuple[int, int, int]:
    """Sequential scans of the outbox, rows they read, rows index scans fetched."""
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                text(
                    "select seq_scan, seq_tup_read, coalesce(idx_tup_fetch, 0)"
                    " from pg_stat_user_tables where schemaname = 'orders' and relname = 'outbox'"
                )
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def _reported(tx: Tx) -> None:
    """This transaction's table statistics reported as it ends (PostgreSQL 15's own
    reports wait up to a second, and then for the backend to be idle)."""
    await tx.conn.execute(text("select pg_stat_force_next_flush()"))


async def test_an_orders_end_is_read_back_by_the_primary_key_not_by_a_scan(
    infrastructure: system.Infrastructure,
) -> None:
    ended_at = datetime.now(UTC) - timedelta(minutes=20)
    order_id = "00000000-0000-4000-8000-000000000001"
    before = [
        _row(f"before-{i}", "order.placed", ended_at - (AROUND - i) * STEP) for i in range(AROUND)
    ]
    after = [_row(f"after-{i}", "order.placed", ended_at + (i + 1) * STEP) for i in range(AROUND)]
    end = _row(order_id, EventType.ORDER_CONFIRMED.value, ended_at)
    async with orders_tables(infrastructure) as db:
        uow = UnitOfWork(db, "caravan/orders", outbox, inbox)
        async with uow.begin() as tx:
            await tx.conn.execute(insert(outbox), before)
            await tx.conn.execute(insert(outbox), [_row(order_id, "order.placed", ended_at), end])
            await tx.conn.execute(insert(outbox), after)
            for kind in ("order.placed", EventType.ORDER_CONFIRMED.value):
                await tx.conn.execute(
                    insert(timeline).values(order_id=order_id, type=kind, time=ended_at)
                )
            await _reported(tx)
        async with db.transaction() as conn:
            await conn.execute(text("analyze orders.outbox"))
        scans, read, fetched = await _outbox_reads(db)
        async with uow.begin() as tx:
            found = await OrderRepository(tx).emitted(order_id, EventType.ORDER_CONFIRMED)
            await _reported(tx)
        scans_after, read_after, fetched_after = await _outbox_reads(db)
    assert found == Emitted(end["key"], end["value"], {}, sent=True)
    scanned = f"{scans_after - scans} scans of the outbox, {read_after - read} rows read"
    assert scans_after == scans, scanned
    # The probes of the bisections (about 30) and the rows of a minute around the end (300).
    assert fetched_after - fetched < 500, fetched_after - fetched
