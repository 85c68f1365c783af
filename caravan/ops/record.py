"""Writing what operations did (replay, redrive) into the audit trail, ``auth.audit``."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from caravan.output import NO_DATABASE, what_lifts
from shared.auth import audit
from shared.auth.tables import audit as audit_table
from shared.db.engine import Fault, Kind, async_engine, fault


class Unrecordable(Exception):
    """A change refused before it was made: the audit trail cannot record it (``why``)."""

    def __init__(self, why: Fault) -> None:
        super().__init__(str(why))
        self.why = why


def refusal(action: str, why: Fault) -> str:
    """Why a change (``action``, e.g. "replay") is refused while the audit trail cannot record
    it (``why``: :func:`unrecordable`), and what lifts it: PostgreSQL back, a database never
    migrated prepared, a login it refuses mended, or a database named."""
    then = what_lifts(why.kind) or "run it once PostgreSQL is back"
    return (
        f"the audit trail cannot record it ({why}): a {action} is not made unrecorded; "
        f"{then} (--dry-run needs only Kafka)"
    )


def actor() -> str:
    """Who is acting: ``CARAVAN_ACTOR`` if set, else the login name."""
    return audit.os_actor()


@asynccontextmanager
async def trail(database_url: str | None) -> AsyncIterator[AsyncEngine | None]:
    """One engine on the audit trail's database (None: no database named) for all that an
    action asks of the trail and records in it, disposed once it is done: a redrive or a
    discard opened three, one after another, each connecting afresh."""
    if database_url is None:
        yield None
        return
    engine = async_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def record(
    engine: AsyncEngine, action: str, dry_run: bool, target: str, detail: dict[str, Any]
) -> None:
    async with engine.begin() as conn:
        await audit.record(conn, actor(), action, target, detail={**detail, "dry_run": dry_run})


async def unrecordable(engine: AsyncEngine | None) -> Fault | None:
    """Why the audit trail cannot record an action now (PostgreSQL down or refusing the
    login, its tables never made, no database named: ``engine`` None, as :func:`trail` gives
    it), or None: asked before a change that must not be made unrecorded, and by a dry run,
    which reads only Kafka and goes on without the trail."""
    if engine is None:
        return Fault(Kind.NOT_NAMED, LookupError(NO_DATABASE))
    try:
        async with engine.connect() as conn:
            await conn.execute(select(audit_table.c.id).limit(0))
    except Exception as exc:
        why = fault(exc)
        if not why.kind.unusable:
            raise
        return why
    return None
