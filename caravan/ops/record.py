"""Writing what operations did (replay, redrive) into the audit trail, ``auth.audit``."""

from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from shared.auth import audit
from shared.settings import asyncpg_url


def actor() -> str:
    """Who is acting: ``CARAVAN_ACTOR`` if set, else the login name."""
    return audit.os_actor()


async def record(
    database_url: str, action: str, dry_run: bool, target: str, detail: dict[str, Any]
) -> None:
    engine = create_async_engine(asyncpg_url(database_url))
    try:
        async with engine.begin() as conn:
            await audit.record(conn, actor(), action, target, detail={**detail, "dry_run": dry_run})
    finally:
        await engine.dispose()
