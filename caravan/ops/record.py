"""Writing what operations did into ``ops.actions``."""

import getpass
import os
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from caravan.ops.tables import actions


def actor() -> str:
    """Who is acting: ``CARAVAN_ACTOR`` if set, else the login name."""
    return os.environ.get("CARAVAN_ACTOR") or getpass.getuser()


async def record(database_url: str, action: str, dry_run: bool, detail: dict[str, Any]) -> None:
    url = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(actions).values(actor=actor(), action=action, dry_run=dry_run, detail=detail)
            )
    finally:
        await engine.dispose()
