"""The audit trail: one row per admin or operations action that changed (or tried to change)
something, written in the same transaction as the change itself where there is one."""

import getpass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.auth.tables import audit
from shared.settings import Settings


def os_actor() -> str:
    """Who acts from the command line: ``CARAVAN_ACTOR`` if set (the settings refuse one
    longer than the audit trail holds), else the login name."""
    return Settings().actor or getpass.getuser()


async def record(
    conn: AsyncConnection,
    actor: str,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry; ``before``/``after`` are JSON-able views of what was changed."""
    await conn.execute(
        insert(audit).values(
            actor=actor[:128],
            action=action,
            target=target[:256],
            before=before,
            after=after,
            detail=detail or {},
        )
    )
