"""The platform adapter's push ids and orders closed unplaced, pruned by its retention
(services/platform/bootstrap.py ``forgotten``, shared/messaging/retention.py), on the platform
schema migrated in a database of its own: push ids older than three timestamp windows go, and
so do the orders found cancelled before they were placed once no read of them paid can still
be decided, in chunks and counted, however long the inbox rows are kept; younger rows of
both stay."""

import math
from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select

from caravan import system
from services.platform.adapters.tables import closed_unplaced, inbox, outbox, parked, pushes
from services.platform.bootstrap import bootstrap, closed_kept_seconds, forgotten
from shared.messaging.retention import Retention
from shared.messaging.uow import UnitOfWork
from shared.settings import Settings
from tests.e2e.test_messaging_retention import orders_tables

WINDOW, DEADLINE = 300.0, 10.0
PUSHES_KEPT = timedelta(seconds=3 * WINDOW)
CLOSED_KEPT = timedelta(seconds=closed_kept_seconds(WINDOW, DEADLINE))
MARGIN = timedelta(seconds=30)


def pruned(table: str) -> float:
    labels = {"service": "platform", "table": table}
    return REGISTRY.get_sample_value("caravan_messaging_rows_pruned_total", labels) or 0.0


async def kept_for_ever() -> float:
    """Kafka keeps the records for ever: no inbox row is pruned."""
    return math.inf


async def wired(settings: Settings) -> None:
    """The adapter's retention prunes those rows (its own loop did until 2026-12-05)."""
    service = bootstrap(settings)
    try:
        loops = [getattr(loop, "__self__", None) for loop in service.loops]
        retention = next(loop for loop in loops if isinstance(loop, Retention))
        assert [rows for rows, _ in retention.expiring] == forgotten(settings)
    finally:
        await service.db.dispose()


async def test_a_prune_pass_forgets_old_push_ids_and_old_orders_closed_unplaced(
    infrastructure: system.Infrastructure,
) -> None:
    assert closed_kept_seconds(WINDOW, DEADLINE) == 910  # as docs/platform-adapter.md says
    ages = {
        "old": CLOSED_KEPT + MARGIN,
        "older": CLOSED_KEPT + 2 * MARGIN,
        "young": PUSHES_KEPT - MARGIN,
        "new": timedelta(0),
    }
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
        settings = Settings(
            database_url="postgresql://caravan:secret@127.0.0.1:1/caravan",  # not reached
            platform_timestamp_window_seconds=WINDOW,
            platform_api_deadline_seconds=DEADLINE,
        )
        await wired(settings)
        retention = Retention(
            db,
            outbox,
            inbox,
            service="platform",
            outbox_hours=24,
            inbox_hours=912,
            kafka_hours=kept_for_ever,
            parked=parked,
            expiring=forgotten(settings),
            chunk=1,  # so that a pass takes several chunks
        )
        before = pruned("pushes"), pruned("closed_unplaced")
        deleted = await retention.prune()
        async with uow.begin() as tx:
            ids = set(await tx.conn.scalars(select(pushes.c.push_id)))
            closed = set(await tx.conn.scalars(select(closed_unplaced.c.platform_order_id)))
    assert ids == {"young", "new"}
    assert closed == {"young", "new", "between"}
    assert deleted == {"outbox": 0, "inbox": 0, "parked": 0, "pushes": 3, "closed_unplaced": 2}
    assert (pruned("pushes"), pruned("closed_unplaced")) == (before[0] + 3, before[1] + 2)
