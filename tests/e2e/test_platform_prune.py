"""The platform adapter's prune pass (services/platform/entrypoints/subscribers.py), on the
platform schema migrated in a database of its own: push ids older than three timestamp
windows go, and so do the orders found cancelled before they were placed once no read of
them paid can still be decided; younger rows of both stay."""

from datetime import timedelta

from sqlalchemy import func, insert, select

from caravan import system
from services.platform.adapters.tables import closed_unplaced, inbox, outbox, pushes
from services.platform.entrypoints.subscribers import closed_kept_seconds, prune_once
from shared.messaging.uow import UnitOfWork
from tests.e2e.test_messaging_retention import orders_tables

WINDOW, DEADLINE = 300.0, 10.0
PUSHES_KEPT = timedelta(seconds=3 * WINDOW)
CLOSED_KEPT = timedelta(seconds=closed_kept_seconds(WINDOW, DEADLINE))
MARGIN = timedelta(seconds=30)


async def test_a_prune_pass_forgets_old_push_ids_and_old_orders_closed_unplaced(
    infrastructure: system.Infrastructure,
) -> None:
    assert closed_kept_seconds(WINDOW, DEADLINE) == 910  # as docs/platform-adapter.md says
    ages = {"old": CLOSED_KEPT + MARGIN, "young": PUSHES_KEPT - MARGIN, "new": timedelta(0)}
    async with orders_tables(infrastructure, "platform") as db:
        uow = UnitOfWork(db, "caravan/platform", outbox, inbox)
        async with uow.begin() as tx:
            for name, age in ages.items():
                at = func.now() - age
                await tx.conn.execute(
                    insert(pushes).values(app="a", push_id=name, fingerprint=name, received_at=at)
                )
                await tx.conn.execute(
                    insert(closed_unplaced).values(
                        app="a", platform_order_id=name, status="cancelled", seen_at=at
                    )
                )
            # past the push ids' age, within the closed orders': only the push id goes
            between = func.now() - (PUSHES_KEPT + CLOSED_KEPT) / 2
            await tx.conn.execute(
                insert(pushes).values(app="a", push_id="between", received_at=between)
            )
            await tx.conn.execute(
                insert(closed_unplaced).values(
                    app="a", platform_order_id="between", status="cancelled", seen_at=between
                )
            )
        await prune_once(uow, WINDOW, DEADLINE)
        async with uow.begin() as tx:
            ids = set(await tx.conn.scalars(select(pushes.c.push_id)))
            closed = set(await tx.conn.scalars(select(closed_unplaced.c.platform_order_id)))
    assert ids == {"young", "new"}
    assert closed == {"young", "new", "between"}
