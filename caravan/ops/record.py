"""Writing what operations did (replay, redrive) into the audit trail, ``auth.audit``."""

from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from shared.auth import audit
from shared.auth.tables import audit as audit_table
from shared.db.engine import async_engine, missing_relation


class Unrecordable(Exception):
    """A change refused before it was made: the audit trail cannot record it (why)."""


def refusal(action: str, why: str) -> str:
    """Why a change (``action``, e.g. "replay") is refused while the audit trail cannot record
    it (``why``: :func:`unrecordable`), and what lifts it."""
    return (
        f"the audit trail cannot record it ({why}): a {action} is not made unrecorded; "
        "run it once PostgreSQL is back (--dry-run needs only Kafka)"
    )


def actor() -> str:
    """Who is acting: ``CARAVAN_ACTOR`` if set, else the login name."""
    return audit.os_actor()


async def record(
    database_url: str, action: str, dry_run: bool, target: str, detail: dict[str, Any]
) -> None:
    engine = async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await audit.record(conn, actor(), action, target, detail={**detail, "dry_run": dry_run})
    finally:
        await engine.dispose()


async def unrecordable(database_url: str) -> str | None:
    """Why the audit trail cannot record an action now (PostgreSQL down or refusing the
    login, its tables never made), or None: asked before a change that must not be made
    unrecorded, and by a dry run, which reads only Kafka and goes on without the trail."""
    engine = async_engine(database_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(select(audit_table.c.id).limit(0))
    except sa_exc.ProgrammingError as exc:
        missing = missing_relation(exc)
        if missing is None:
            raise
        return f"the database is not migrated ({missing})"
    except (sa_exc.DBAPIError, asyncpg.PostgresError, OSError, TimeoutError) as exc:
        return f"cannot reach PostgreSQL: {getattr(exc, 'orig', None) or exc}"
    finally:
        await engine.dispose()
    return None
