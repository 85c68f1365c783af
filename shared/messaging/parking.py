"""Events that came before the event they follow: parked until it comes, then handled.

An order's events are keyed by its id, so they stay in order on one partition; but not
always: an ``order.placed`` that a service dead-lettered comes again after the later events
when it is redriven (``caravan dlq redrive``), a topic given more partitions sends an order's
next events elsewhere, and a replay may start between the two. A handler that needs what
``order.placed`` told (whom to text, which platform order it is) and finds nothing parks
the event (:meth:`Parking.park`): a row of the service's ``parked`` table holding the whole
envelope, written in the handling transaction. The ``order.placed`` handler takes the
order's parked events (:meth:`Parking.take`, in the subscription's prefetch: one statement a
batch) and hands each to its handler again in its own transaction (:meth:`Parking.release`),
so a parked event is acted on once: the row goes with the transaction that acts on it, and
the inbox already stops the event itself, and the ``order.placed``, from being handled twice.

Both sides take the order's advisory lock (:class:`OrderLocks`) before they look, so that a
handler parking an event and the ``order.placed`` handler of another instance cannot each
miss what the other is committing. Parked rows are pruned with the inbox's retention
(:mod:`shared.messaging.retention`): an ``order.placed`` can come as long as Kafka keeps it,
and an event whose ``order.placed`` never comes is not kept longer.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import (
    ARRAY,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import ClauseElement, Select

from shared.db import driver
from shared.events.registry import Parsed, PoisonRecord, validate_record
from shared.messaging.uow import Tx
from shared.topics import Topic

log = logging.getLogger(__name__)


def add_parked_table(metadata: MetaData) -> Table:
    """Declare ``parked`` in ``metadata`` (whose schema is the service's)."""
    return Table(
        "parked",
        metadata,
        Column("key", String(600), primary_key=True),  # the inbox's key of the event
        Column("order_id", String(36), nullable=False),  # the order whose event it waits for
        Column("topic", String(255), nullable=False),
        Column("envelope", JSONB, nullable=False),
        Column("parked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("parked_order", "order_id"),
    )


@dataclass(frozen=True)
class OrderLocks:
    """Per-order advisory locks of one service (``lock_class`` tells its locks from others'),
    taken for the rest of the transaction."""

    lock_class: int

    @cached_property
    def _statement(self) -> Select[Any]:
        keys = func.unnest(bindparam("keys", type_=ARRAY(String))).table_valued("key")
        key = keys.render_derived().c.key
        ordered = select(key).order_by(func.hashtext(key), key)
        return select(
            func.pg_advisory_xact_lock(self.lock_class, func.hashtext(ordered.subquery().c.key))
        )

    async def lock(self, tx: Tx, order_ids: Iterable[str]) -> None:
        """Take the locks not held yet, in the order of their lock keys (two transactions
        never wait for each other's keys in opposite orders, even where two ids share a
        key), in one statement."""
        kind = f"locked.{self.lock_class}"
        todo = tx.unknown(kind, order_ids)
        if not todo:
            return
        await driver.fetch(tx.conn, self._statement, keys=todo)
        tx.remember(kind, todo, dict.fromkeys(todo, True))


@dataclass(frozen=True)
class Parking:
    """One service's parked events (its ``parked`` table), waiting for their order's
    ``order.placed``. Callers hold the order's lock (:class:`OrderLocks`) first."""

    table: Table

    @property
    def _kind(self) -> str:
        return f"parked.{self.table.fullname}"

    @cached_property
    def _take(self) -> ClauseElement:
        t = self.table
        return (
            delete(t)
            .where(driver.any_of(t.c.order_id))
            .returning(t.c.order_id, t.c.topic, t.c.envelope, t.c.parked_at, t.c.key)
        )

    async def take(self, tx: Tx, order_ids: Iterable[str]) -> None:
        """Remove these orders' parked events from the table, in one statement, and keep
        them in the transaction's identity map for :meth:`release`."""
        todo = tx.unknown(self._kind, order_ids)
        if not todo:
            return
        found: dict[str, list[Parsed]] = {order_id: [] for order_id in todo}
        rows = await driver.fetch(tx.conn, self._take, keys=todo)
        for row in sorted(rows, key=lambda r: (r.parked_at, r.key)):
            try:
                found[row.order_id].append(validate_record(Topic(row.topic), row.envelope))
            except (PoisonRecord, ValueError) as exc:  # a type or topic no longer read
                log.warning("parked event %s of order %s dropped: %s", row.key, row.order_id, exc)
        tx.remember(self._kind, todo, found)

    def park(self, tx: Tx, order_id: str, topic: Topic, parsed: Parsed) -> None:
        """Keep ``parsed`` until ``order.placed`` of ``order_id`` comes. If that is later in
        this transaction (its events were taken already), it only joins them."""
        log.info("%s of order %s parked until its order.placed", parsed.envelope.type, order_id)
        waiting: list[Parsed] | None = tx.identity.get((self._kind, order_id))
        if waiting is not None:
            waiting.append(parsed)
            return
        row: dict[str, object] = {
            "key": f"{parsed.envelope.source}|{parsed.envelope.id}",
            "order_id": order_id,
            "topic": topic.value,
            "envelope": parsed.envelope.model_dump(mode="json", exclude_none=True),
        }
        tx.insert_later(self.table, row, skip_existing=True)

    async def release(self, tx: Tx, order_id: str) -> list[Parsed]:
        """The events parked for ``order_id`` (taken from the table), in the order they came;
        the caller handles each, in this transaction. Events parked for it later in this
        transaction are parked in the table again."""
        await self.take(tx, [order_id])
        waiting: list[Parsed] = tx.identity.pop((self._kind, order_id))
        for parsed in waiting:
            log.info("acting on %s of order %s, parked until now", parsed.envelope.type, order_id)
        return waiting

    async def drop(self, tx: Tx, order_id: str, why: str) -> None:
        """Drop the events parked for ``order_id``, each logged saying ``why``: its
        ``order.placed`` is known never to come."""
        await tx.flush()  # those parked earlier in this transaction (written at commit)
        await self.take(tx, [order_id])
        for parsed in tx.identity.pop((self._kind, order_id)):
            log.info(
                "%s of order %s dropped, never acted on: %s", parsed.envelope.type, order_id, why
            )


__all__ = ["OrderLocks", "Parking", "add_parked_table"]
