"""The audit trail: one row per admin or operations action that changed (or tried to change)
something, written in the same transaction as the change itself where there is one."""

import getpass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.auth.tables import audit
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.messaging.uow import Tx


def os_actor() -> str:
    """Who acts from the command line: ``CARAVAN_ACTOR`` if set (the settings refuse one
    longer than the audit trail holds), else the login name."""
    return Settings().actor or getpass.getuser()


class Change(TypedDict, total=False):
    """The keywords of :func:`entry` after its target, named so that mypy checks them."""

    before: Any
    after: Any
    detail: dict[str, Any] | None


async def record(
    conn: AsyncConnection, actor: str, action: str, target: str, **change: Unpack[Change]
) -> None:
    """Append one entry (:func:`entry`)."""
    await conn.execute(insert(audit).values(entry(actor, action, target, **change)))


def record_later(tx: "Tx", actor: str, action: str, target: str, **change: Unpack[Change]) -> None:
    """:func:`record` at ``tx``'s commit, with its other entries in one statement
    (:meth:`Tx.insert_later`): a seed file's thousands of entries were a statement each."""
    tx.insert_later(audit, entry(actor, action, target, **change))


def entry(
    actor: str,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One entry's row; ``before``/``after`` are JSON-able views of what was changed."""
    return {
        "actor": actor[:128],
        "action": action,
        "target": target[:256],
        "before": before,
        "after": after,
        "detail": detail or {},
    }


class Asked(TypedDict, total=False):
    """What :func:`entries` narrows the trail by, each exactly as written (None: any)."""

    action: str | None
    target: str | None
    actor: str | None
    since: datetime | None
    until: datetime | None


async def entries(
    conn: AsyncConnection, limit: int, **asked: Unpack[Asked]
) -> tuple[list[dict[str, Any]], bool]:
    """The newest ``limit`` entries of the trail (by time, then id) matching ``asked``: an
    action, a target (an order, a lot, a token...), an actor, at or after ``since`` and
    before ``until``; and whether there are more. Read with the database's admin login, as
    ``caravan tokens list`` reads the tokens: the services may only append to it."""
    query = select(audit)
    for name in ("action", "target", "actor"):
        if (given := asked.get(name)) is not None:
            query = query.where(audit.c[name] == given)
    if (since := asked.get("since")) is not None:
        query = query.where(audit.c.at >= since)
    if (until := asked.get("until")) is not None:
        query = query.where(audit.c.at < until)
    query = query.order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit + 1)
    rows = [dict(r._mapping) for r in await conn.execute(query)]
    return rows[:limit], len(rows) > limit
