"""Loading reference data into the services that own it (inventory, payments, notifications)."""

from collections.abc import Awaitable, Callable, Sequence
from datetime import date, timedelta

from sqlalchemy import MetaData, select
from sqlalchemy.pool import NullPool

from services.inventory import handlers as inventory
from services.inventory.adapters.tables import lots
from services.inventory.adapters.tables import metadata as inventory_metadata
from services.notifications import handlers as notifications
from services.notifications.adapters.tables import metadata as notifications_metadata
from services.payments import handlers as payments
from services.payments.adapters.tables import metadata as payments_metadata
from shared import days
from shared.db import Database, driver
from shared.db.engine import async_engine
from shared.messaging.uow import Tx, UnitOfWork
from shared.seed import Loaded, SeedFile
from shared.settings import Settings

Loader = Callable[[Tx, SeedFile], Awaitable[Loaded]]
"""Loads its service's part of a seed file; returns what it did."""
LOADERS: list[tuple[MetaData, Loader]] = [
    (inventory_metadata, inventory.load_seed),
    (payments_metadata, payments.load_seed),
    (notifications_metadata, notifications.load_seed),
]


async def load(database_url: str, seed: SeedFile) -> Loaded:
    """Each owner loads its part in its own transaction; loading twice changes nothing.
    Returns what all of them did (what they left as it was, said: lots loaded before, credit
    lines opened before)."""
    settings = Settings(DATABASE_URL=database_url)
    loaded = Loaded()
    for metadata, loader in LOADERS:
        schema = str(metadata.schema)
        db = Database(settings, schema)
        uow = UnitOfWork(
            db,
            source=f"caravan/{schema}",
            outbox=metadata.tables[f"{schema}.outbox"],
            inbox=metadata.tables[f"{schema}.inbox"],
        )
        try:
            async with uow.begin() as tx:
                loaded |= await loader(tx, seed)
        finally:
            await db.dispose()
    return loaded


async def load_again(database_url: str, seed: SeedFile) -> Loaded:
    """Load ``seed``, made relative to today (the test session's, the benchmarks'), into a
    database that may hold what it made on another day: the lots whose ids were received
    before are left out, kept as they were, where :func:`load` refuses a lot id that holds
    other terms (another day's dates)."""
    engine = async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                select(lots.c.lot_id).where(driver.any_of(lots.c.lot_id)),
                {"keys": [lot.lot_id for lot in seed.lots]},
            )
            received = set(found.scalars())
    finally:
        await engine.dispose()
    new = [lot for lot in seed.lots if lot.lot_id not in received]
    return await load(database_url, seed.model_copy(update={"lots": new}))


UPDATED = ("sellers", "products")
"""The sections whose rows a seed file updates; lots and credit lines it adds only."""


def summary(seed: SeedFile, loaded: Loaded, today: date) -> list[str]:
    """What loading ``seed`` did, a line per section, as ``caravan seed`` prints it: how many
    of its rows were new, updated (sellers and products only) and unchanged, and how many
    of its lots will not sell (:func:`will_not_sell`)."""
    lines = []
    for section, ids in seed.ids().items():
        new = len(loaded.added.get(section, set()))
        updated = len(loaded.changed.get(section, set()))
        told = [f"{new} new"]
        if section in UPDATED:
            told.append(f"{updated} updated")
        told.append(f"{len(ids) - new - updated} unchanged")
        unsold = sum(map(len, will_not_sell(seed, loaded, today).values()))
        if section == "lots" and unsold:
            told.append(f"{unsold} will not sell")
        lines.append(f"  {section}: {', '.join(told)}")
    return lines


def will_not_sell(seed: SeedFile, loaded: Loaded, today: date) -> dict[str, list[str]]:
    """The lots of ``seed`` that no order can take from ``today`` on, by why: their
    ``best_before`` is past (a lot's ``available_from`` is never after it), or, new in this
    load (``loaded``), they hold no units (one loaded before may have been given units
    since: a seed leaves a lot as it is). A seed loads them all the same: a county centre may
    book an expired lot, or one whose harvest is not counted yet. Each reason is a line of
    ``caravan seed`` naming the first of its lots (:func:`shared.seed.named`): a line per lot
    was 426 lines of a harvest-peak file's expired lots on every run."""
    new = loaded.added.get("lots", set())
    why: dict[str, list[str]] = {}
    for lot in seed.lots:
        if lot.best_before < today:
            why.setdefault(EXPIRED, []).append(lot.lot_id)
        elif lot.lot_id in new and lot.quantity == 0:
            why.setdefault(EMPTY, []).append(lot.lot_id)
    return why


EXPIRED = "lots that will not sell, their best_before past"
NO_UNITS = "of quantity 0 (`caravan inventory adjust` gives units)"
"""Why a new lot will not sell, as ``caravan seed`` and ``caravan inventory add-lot`` say it."""
EMPTY = f"new lots that will not sell, {NO_UNITS}"


def bench_seed(
    skus: Sequence[str],
    lots: Sequence[tuple[int, int]],
    units: int,
    buyers: Sequence[dict[str, object]] = (),
) -> SeedFile:
    """The seed the benchmarks load: one seller offering ``skus`` at 1 yuan, each SKU with a
    lot ``<sku>-<n>`` of ``units`` per (n, days until best before) in ``lots``, in season
    since 30 days; and ``buyers`` as given."""
    today = days.today()
    return SeedFile.model_validate(
        {
            "sellers": [
                {"id": "bench", "name": "Bench", "county": "Shawan", "phone": "+8613000000999"}
            ],
            "products": [
                {"sku": s, "seller_id": "bench", "unit_price_fen": 100, "name": {"en": s}}
                for s in skus
            ],
            "lots": [
                {
                    "lot_id": f"{s}-{n}",
                    "sku": s,
                    "quantity": units,
                    "available_from": str(today - timedelta(days=30)),
                    "best_before": str(today + timedelta(days=days)),
                }
                for s in skus
                for n, days in lots
            ],
            "buyers": list(buyers),
        }
    )
