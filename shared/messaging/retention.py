"""Retention of the outbox and the inbox: rows that nothing needs any more are deleted.

Without it both tables grow for ever (across the services, about seven outbox rows and ten
inbox rows per order), until a county centre's database fills its disk.

- **Outbox.** A row is needed until the relay has published it. Published rows are kept
  ``outbox_retention_hours`` (24) for whoever looks into what a service emitted, then
  deleted. A row not yet published is never deleted, however old.
- **Inbox.** A row stops a record from being handled twice, and a record can come again for
  as long as Kafka holds it (a consumer that stopped before committing its offset, a
  ``caravan replay``). So a row must outlive its record. Kafka deletes a record with its log
  segment, once the segment's newest record is older than the topic's ``retention.ms``; a
  segment is rolled after ``segment.ms``. The default, ``inbox_retention_hours`` = 912 (38
  days), is the dead-letter topics' retention (``dlq_retention_hours``, 30 days) plus Kafka's
  default segment time (7 days) plus a day; the other topics keep Kafka's default retention
  (7 days and a segment). A broker whose topics keep records longer needs a longer inbox
  retention: never shorter than ``retention.ms + segment.ms``, or a replay handles old
  records again. So
  before each prune a service asks the broker for the topics it consumes, and keeps inbox
  rows that long plus a day when that is longer than its setting (a warning says so); with
  a topic kept for ever (``retention.ms`` -1, or compacted), or a broker that does not
  answer, it prunes no inbox row that time. It asks for their dead-letter twins too: a
  letter's event comes again when it is redriven (``caravan dlq redrive``, ``--again`` a
  letter redriven before), as long as its ``.dlq`` topic keeps it, and must find its row.
- **Parked events** (:mod:`shared.messaging.parking`), of the services that park events
  waiting for their order's ``order.placed``: kept as long as inbox rows. What they wait
  for can come as long as Kafka keeps it (a redrive, a replay); one whose ``order.placed``
  never comes does not stay longer.

- **Rows holding personal data** (:class:`Expiring`): rows a service is done with (a text
  sent, delivered, failed or suppressed: the buyer's number and the words) are deleted
  their setting after they were made (``notifications_sms_retention_days``, 180 days), or
  after they were done with (a buyer nothing can text about an order any more:
  ``notifications_recipient_retention_days``, 180 days).
  Never before the inbox rows of their age: the inbox stops an event handled again, but a
  text's dedup key is what stops a second event asking for the same text (a seller's text,
  which either of two events queues; a reminder announced twice), and a record that could
  ask for it stays in Kafka no longer than inbox rows are kept. So they are kept at least
  as long as the inbox rows this round (``inbox_retention_hours``, or longer when Kafka
  keeps records longer), whatever their setting says. With the inbox kept for ever (0) they
  go after their own setting.
- **Rows no record acts on** (an :class:`Expiring` with ``outlive_inbox=False``): the
  platform adapter's push ids and the orders a push found cancelled before they were placed,
  kept minutes. What reads them comes over HTTP (a push, a refetch), never from Kafka: a
  replay or a redrive finds nothing in them, so they go after their own hours alone, however
  long the inbox rows are kept (for ever too). Pruned with the rest, so kept up to one
  prune interval past their hours.
- **Personal data in rows kept** (an :class:`Expiring` with ``erase``): a row that must stay
  (an order) loses its personal columns instead (``orders_delivery_retention_days``, 180
  days after the order ended: its delivery address), by the same rule and in the same
  chunks.

``0`` keeps a table's rows for ever. Every ``messaging_prune_interval_seconds`` (an hour;
the first time at start) a service deletes its own schema's old rows in chunks, each chunk
one short statement that skips rows locked by anyone else (another instance pruning, a relay
marking rows sent). Neither table has an index on its timestamps: an index would cost every
insert, on the hottest tables there are, to save a scan an hour.
"""

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Table

from shared.db import Database, driver, log_retry
from shared.metrics import MESSAGING_PRUNED, start_at_zero

log = logging.getLogger(__name__)

HOUR = 3600.0
MARGIN_HOURS = 24.0  # beyond what Kafka may keep, as in the default


@dataclass(frozen=True)
class Expiring:
    """Rows of ``table`` that are deleted ``hours`` after their ``column`` (0: never) once
    ``done`` (an SQL condition on a row) holds, and never before the inbox rows of their
    age: rows a replay would otherwise act on again. With ``erase`` (an SQL ``SET`` list)
    the rows are kept and updated so instead; ``done`` must then no longer hold of a row
    erased, or it would be erased again every round. Without ``outlive_inbox`` they go after
    their ``hours`` alone: rows no Kafka record acts on (what reads them comes over HTTP)."""

    table: Table
    column: str
    done: str
    hours: float
    erase: str = ""
    outlive_inbox: bool = True


class Retention:
    """Deletes one service's outbox rows published more than ``outbox_hours`` ago and its
    inbox rows older than ``inbox_hours`` (0: never), or than ``kafka_hours()`` (how long
    Kafka may keep the records of the topics the service consumes, and of their dead-letter
    twins) and a day if longer;
    and its ``parked`` events (if it has the table) as old as those inbox rows; and its
    ``expiring`` rows past their own hours, or those inbox rows' if longer (unless they need
    not outlive them)."""

    def __init__(
        self,
        db: Database,
        outbox: Table,
        inbox: Table,
        *,
        service: str,
        outbox_hours: float,
        inbox_hours: float,
        kafka_hours: Callable[[], Awaitable[float]] | None,
        parked: Table | None = None,
        expiring: Sequence[Expiring] = (),
        interval_seconds: float = HOUR,
        chunk: int = 5000,
    ) -> None:
        self.db = db
        self.service = service
        self.outbox, self.inbox = outbox, inbox
        self.outbox_hours, self.inbox_hours = outbox_hours, inbox_hours
        self.kafka_hours = kafka_hours
        self.interval_seconds = interval_seconds
        self.chunk = chunk
        # Published rows only: sent_at is NULL until then, and NULL is never older.
        self._outbox_sql = _prune_sql(outbox, "sent_at")
        self._inbox_sql = _prune_sql(inbox, "handled_at")
        self.parked = parked
        self._parked_sql = _prune_sql(parked, "parked_at") if parked is not None else ""
        self.expiring = [
            (rows, _prune_sql(rows.table, rows.column, rows.done, rows.erase)) for rows in expiring
        ]
        pruned = [t.name for t in (outbox, inbox, parked) if t is not None]
        pruned += [rows.table.name for rows in expiring]
        start_at_zero(MESSAGING_PRUNED, [service], pruned)

    async def run(self) -> None:
        while True:
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_retry(log, "pruning the outbox and inbox failed", exc)
            await asyncio.sleep(self.interval_seconds)

    async def prune(self) -> dict[str, int]:
        """Delete what is past its retention now; how many rows of each table."""
        inbox_hours = await self.inbox_keep_hours()
        deleted = {
            self.outbox.name: await self._delete(self.outbox, self._outbox_sql, self.outbox_hours),
            self.inbox.name: await self._delete(self.inbox, self._inbox_sql, inbox_hours),
        }
        if self.parked is not None:
            deleted[self.parked.name] = await self._delete(
                self.parked, self._parked_sql, inbox_hours
            )
        for rows, sql in self.expiring:
            hours = rows.hours
            if rows.outlive_inbox and hours > 0:
                hours = max(hours, inbox_hours)
            deleted[rows.table.name] = await self._delete(rows.table, sql, hours)
        if any(deleted.values()):
            log.info("pruned %s", ", ".join(f"{n} {name} rows" for name, n in deleted.items()))
        return deleted

    async def inbox_keep_hours(self) -> float:
        """How long inbox rows are kept this time (0 or infinite: none is deleted)."""
        if self.inbox_hours <= 0 or self.kafka_hours is None:
            return self.inbox_hours
        try:
            kafka = await self.kafka_hours()
        except Exception as exc:
            log.warning(
                "no inbox row pruned: Kafka did not say how long it keeps records (%r)", exc
            )
            return math.inf
        if kafka + MARGIN_HOURS <= self.inbox_hours:
            return self.inbox_hours
        kept = kafka + MARGIN_HOURS
        log.warning(
            "inbox rows kept %s, longer than inbox_retention_hours=%g: Kafka keeps records of "
            "the topics %s consumes or their .dlq %s (retention.ms + segment.ms), and a replay "
            "or a redrive must find ids",
            "for ever" if math.isinf(kept) else f"{kept:g} h",
            self.inbox_hours,
            self.service,
            "for ever" if math.isinf(kafka) else f"up to {kafka:g} h",
        )
        return kept

    async def _delete(self, table: Table, sql: str, hours: float) -> int:
        """Delete ``table``'s rows older than ``hours`` in chunks (0 or infinite: none)."""
        deleted = 0
        if hours <= 0 or math.isinf(hours):
            return deleted
        while True:
            async with driver.transaction(self.db.engine) as conn:
                status = await conn.execute(sql, hours * HOUR, self.chunk)
            n = int(status.split()[-1])  # "DELETE <n>" or "UPDATE <n>"
            deleted += n
            MESSAGING_PRUNED.labels(self.service, table.name).inc(n)
            if n < self.chunk:
                return deleted


def _prune_sql(table: Table, column: str, where: str = "", erase: str = "") -> str:
    """Delete up to ``$2`` rows whose ``column`` is more than ``$1`` seconds old (and of
    which ``where`` holds), or with ``erase`` update them so."""
    name = driver.qualified(table)
    also = f" AND ({where})" if where else ""
    verb = f"UPDATE {name} SET {erase}" if erase else f"DELETE FROM {name}"
    return (
        f"{verb} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM {name} WHERE {column} < now() - make_interval(secs => $1){also}"
        " LIMIT $2 FOR UPDATE SKIP LOCKED))"
    )


__all__ = ["Expiring", "Retention"]
