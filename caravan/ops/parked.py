"""Events parked until their order's ``order.placed`` (:mod:`shared.messaging.parking`):
listing them with their age and why they wait, and dropping chosen ones.

An event whose ``order.placed`` never comes (a forged or mistaken event, an order lost
upstream) stays parked until the inbox's retention prunes it, 38 days, and
``CaravanEventsParked`` fires all that time. What orders knows of the order tells the two
apart: an order it never placed sends no ``order.placed``; one it placed has its
``order.placed`` still to come to the service (dead-lettered by it, set aside by orders'
outbox, on a partition added and not read yet, or before the start of a replay of its group:
the alert's causes).

A drop deletes the rows and records it in the audit trail (who, when, why, and the events:
their type, order, topic and when they were parked) in the same transaction: a dropped event
is never acted on, even when its ``order.placed`` comes later (the inbox has its id, so a
replay or a redelivery of it changes nothing either), and notifications forgets an
``order.confirmed`` dropped (:func:`_forget_confirmations`). A row taken meanwhile by the
``order.placed`` handler (acted on) is not dropped, and said so: the two delete the same row,
and PostgreSQL lets one of them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from caravan.ops.record import actor
from services.notifications.adapters.tables import confirmed_orders
from services.notifications.adapters.tables import parked as notifications_parked
from services.orders.adapters.tables import orders
from services.platform.adapters.tables import parked as platform_parked
from shared.auth import audit
from shared.auth.tables import audit as audit_table
from shared.db.engine import async_engine
from shared.topics import EventType, Topic, consumer_group

TABLES: dict[str, Table] = {"notifications": notifications_parked, "platform": platform_parked}
"""The services that park events, each with its ``parked`` table."""


@dataclass(frozen=True)
class Placed:
    """What the orders service knows of a parked event's order."""

    status: str
    placed_at: datetime


@dataclass(frozen=True)
class Parked:
    """An event one service parked, and what orders knows of its order (None: nothing)."""

    service: str
    key: str  # the inbox's key of the event: source|id
    event_id: str
    type: str
    order_id: str
    topic: str
    parked_at: datetime
    order: Placed | None

    @property
    def ref(self) -> str:
        """How ``caravan parked`` names it: its service and the event's id."""
        return f"{self.service}:{self.event_id}"

    def why(self, now: datetime) -> str:
        """Why it waits, and for how long it has."""
        waited = f"waits {age(now - self.parked_at)} for the order.placed of {self.order_id}"
        if self.order is None:
            return (
                f"{waited}: orders has no such order, so none will come (a forged or"
                " mistaken event, or an order lost before orders placed it)"
            )
        placed = self.order.placed_at.isoformat(timespec="seconds")
        return (
            f"{waited}: orders placed it {placed} ({self.order.status}), its order.placed not"
            f" handled by {self.service} yet: dead-lettered (caravan dlq list --topic"
            f" {Topic.ORDER_EVENTS}), set aside by orders' outbox, on a partition added and"
            f" not read yet, or skipped by a replay that started after it (caravan pause"
            f" {self.service}, caravan replay --topic {Topic.ORDER_EVENTS} --group"
            f" {consumer_group(self.service)} --from-timestamp {placed}, caravan resume"
            f" {self.service}: its order.placed is read again, and this event acted on)"
        )


def age(waited: timedelta) -> str:
    """A wait as ``3d 4h``, ``2h 5m``, ``7m 12s`` or ``40s``."""
    seconds = int(waited.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


async def read(database_url: str, services: Sequence[str] = tuple(TABLES)) -> list[Parked]:
    """Every event the given services (all that park, by default) hold parked, the oldest
    first, each with what orders knows of its order."""
    engine = async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = []
            for service in services:
                t = TABLES[service]
                found = await conn.execute(
                    select(t.c.key, t.c.order_id, t.c.topic, t.c.envelope, t.c.parked_at)
                )
                rows += [(service, row) for row in found]
            ids = sorted({row.order_id for _, row in rows})
            known = {
                order_id: Placed(status, placed_at)
                for order_id, status, placed_at in await conn.execute(
                    select(orders.c.order_id, orders.c.status, orders.c.placed_at).where(
                        orders.c.order_id.in_(ids)
                    )
                )
            }
    finally:
        await engine.dispose()
    events = [
        Parked(
            service,
            row.key,
            str(row.envelope.get("id", row.key)),
            str(row.envelope.get("type", "?")),
            row.order_id,
            row.topic,
            row.parked_at,
            known.get(row.order_id),
        )
        for service, row in rows
    ]
    return sorted(events, key=lambda e: (e.parked_at, e.service, e.key))


async def drop(
    database_url: str, events: Sequence[Parked], *, reason: str, dry_run: bool = False
) -> list[Parked]:
    """Delete ``events`` from their services' ``parked`` tables, never to be acted on, and
    record it (a dry run deletes nothing, and is recorded as one); the events dropped (in a
    dry run, those that would be), without those the ``order.placed`` handler took
    meanwhile."""
    if not reason.strip():
        raise ValueError("say why these events are dropped (--reason)")
    engine = async_engine(database_url)
    dropped: list[Parked] = []
    try:
        async with engine.begin() as conn:
            for service, t in TABLES.items():
                mine = {e.key: e for e in events if e.service == service}
                if not mine:
                    continue
                if dry_run:
                    found = await conn.execute(select(t.c.key).where(t.c.key.in_(mine)))
                else:
                    found = await conn.execute(
                        delete(t).where(t.c.key.in_(mine)).returning(t.c.key)
                    )
                dropped += [mine[key] for (key,) in found]
            if not dry_run:
                await _forget_confirmations(conn, dropped)
            await audit.record(
                conn,
                actor(),
                "parked.drop",
                ", ".join(sorted({e.service for e in events})),
                detail={
                    "dry_run": dry_run,
                    "reason": reason,
                    "events": [
                        {
                            "service": e.service,
                            "key": e.key,
                            "type": e.type,
                            "order_id": e.order_id,
                            "topic": e.topic,
                            "parked_at": e.parked_at.isoformat(),
                            "order_known": e.order is not None,
                        }
                        for e in dropped
                    ],
                    "gone_meanwhile": sorted({e.ref for e in events} - {e.ref for e in dropped}),
                },
            )
    finally:
        await engine.dispose()
    return dropped


async def _forget_confirmations(conn: AsyncConnection, dropped: Sequence[Parked]) -> None:
    """Forget notifications' record of each ``order.confirmed`` ``dropped`` (written as it was
    parked: a confirmation read, which texts the sellers once the stock is reserved), never
    acted on. Kept, it had notifications take the order's ``order.placed`` for handled long
    ago (a confirmation kept, nothing of the order parked): a loan's event of the order after
    the drop was logged "not acted on: its order.placed was handled long ago" and not parked,
    where it waits for its ``order.placed`` as any event of an order never placed. One
    statement for them all."""
    ids = sorted(
        (e.order_id, e.event_id)
        for e in dropped
        if e.service == "notifications" and e.type == EventType.ORDER_CONFIRMED
    )
    if ids:
        key = tuple_(confirmed_orders.c.order_id, confirmed_orders.c.event_id)
        await conn.execute(delete(confirmed_orders).where(key.in_(ids)))


@dataclass(frozen=True)
class Dropped:
    """A drop that deleted a parked event, as the audit trail has it."""

    at: datetime
    by: str
    reason: str


async def dropped_before(database_url: str, refs: Sequence[str]) -> dict[str, Dropped]:
    """Which of ``refs`` (``SERVICE:EVENT_ID``) a drop deleted before, with when, by whom and
    why (of several, the last): a drop of one no longer parked says so."""
    engine = async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(audit_table.c.at, audit_table.c.actor, audit_table.c.detail)
                .where(
                    audit_table.c.action == "parked.drop",
                    audit_table.c.detail["dry_run"].as_boolean().is_(False),
                )
                .order_by(audit_table.c.at)
            )
            found = {}
            for at, by, detail in rows:
                for e in detail.get("events") or ():
                    # the inbox's key, source|id: the event's id after the last bar
                    ref = f"{e.get('service')}:{str(e.get('key', '')).rpartition('|')[2]}"
                    if ref in refs:
                        found[ref] = Dropped(at, by, str(detail.get("reason", "")))
            return found
    finally:
        await engine.dispose()


__all__ = ["TABLES", "Dropped", "Parked", "Placed", "age", "drop", "dropped_before", "read"]
