"""Loading reference data into the services that own it (inventory, payments, notifications)."""

from collections.abc import Awaitable, Callable

from sqlalchemy import MetaData

from services.inventory import handlers as inventory
from services.inventory.adapters.tables import metadata as inventory_metadata
from services.notifications import handlers as notifications
from services.notifications.adapters.tables import metadata as notifications_metadata
from services.payments import handlers as payments
from services.payments.adapters.tables import metadata as payments_metadata
from shared.db import Database
from shared.messaging.uow import Tx, UnitOfWork
from shared.seed import SeedFile
from shared.settings import Settings

Loader = Callable[[Tx, SeedFile], Awaitable[None]]
LOADERS: list[tuple[MetaData, Loader]] = [
    (inventory_metadata, inventory.load_seed),
    (payments_metadata, payments.load_seed),
    (notifications_metadata, notifications.load_seed),
]


async def load(database_url: str, seed: SeedFile) -> None:
    """Each owner loads its part in its own transaction; loading twice changes nothing."""
    settings = Settings(DATABASE_URL=database_url)
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
                await loader(tx, seed)
        finally:
            await db.dispose()
